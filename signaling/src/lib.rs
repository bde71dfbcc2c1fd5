//! The SIP signaling edge (registrar, B2BUA, RTP relay). Built by the SIP edge issue; empty
//! until then.
