//! Read models (routing, billing, call history) projected from the event log. Built by the
//! projections issue; empty until then.
