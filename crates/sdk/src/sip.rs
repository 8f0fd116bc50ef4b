//! SIP actions in the call's dialog: REFER and its subscription.

#[cfg(target_arch = "wasm32")]
use crate::bindings::verbhost::plugin::sip as wit;
/// A NOTIFY of a REFER's subscription.
pub use crate::bindings::verbhost::plugin::sip::Notify;
pub use crate::bindings::verbhost::plugin::sip::{
    NotifyError, ReferError, ReferEvent, ReferRequest, ReferResponse, SipfragStatus,
    SubscriptionState, SubscriptionStatus,
};

use crate::Header;

/// Sends a REFER in the call's dialog and waits for its final response.
pub fn send_refer(request: &ReferRequest) -> Result<ReferResponse, ReferError> {
    #[cfg(target_arch = "wasm32")]
    {
        wit::send_refer(request)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::native::with_host("sip::send_refer", |host| host.send_refer(request))
    }
}

/// Waits up to `timeout_ms` for the next event of the REFER `refer_id`.
pub fn on_notify(refer_id: u32, timeout_ms: u32) -> Result<ReferEvent, NotifyError> {
    #[cfg(target_arch = "wasm32")]
    {
        wit::on_notify(refer_id, timeout_ms)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::native::with_host("sip::on_notify", |host| {
            host.on_notify(refer_id, timeout_ms)
        })
    }
}

/// Reading headers by name, case-insensitively and with compact forms expanded.
pub trait HeaderList {
    /// The value of the first header called `name`.
    fn header(&self, name: &str) -> Option<&str>;
}

impl HeaderList for [Header] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|h| verbhost_common::headers::same_name(&h.name, name))
            .map(|h| h.value.as_str())
    }
}

impl ReferError {
    /// What went wrong, in words.
    pub fn message(&self) -> String {
        match self {
            Self::Timeout => "no final response to the REFER (transaction timeout)".into(),
            Self::DialogGone => "the call's dialog no longer exists".into(),
            Self::Rejected(why) => format!("the host refused the REFER: {why}"),
            Self::Transport(why) => format!("transport failure: {why}"),
        }
    }
}
