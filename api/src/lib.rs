//! The HTTP API for admins, billing teams and auditors. Built by the HTTP API issue; empty
//! until then.
