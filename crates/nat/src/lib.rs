//! NAT traversal for the phone: what a socket behind a NAT needs to learn about
//! itself. It owns the STUN wire format for a Binding (RFC 5389) and the small
//! blocking client that asks the ini's STUN servers, in order, for a socket's public
//! (server-reflexive) address. It knows no SIP, no SDP and no RTP: the SIP layer and
//! the media engine hand it their sockets before they start using them and put the
//! answer in Contact and SDP themselves.
//!
//! * [`stun`] is the Binding request / response codec and [`stun::discover`].
//! * [`check`] is the wire layer of ICE connectivity checks (MESSAGE-INTEGRITY,
//!   FINGERPRINT, the ICE attributes);
//! * [`ice`] is the ICE agent (RFC 8445) that runs them, sans-IO, and the SDP
//!   candidate line (RFC 8839).

pub mod check;
pub mod ice;
pub mod stun;
