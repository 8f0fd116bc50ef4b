//! Dialogs (RFC 3261 §12) and the REFER subscriptions that live in them (RFC 3515, 6665,
//! 4488), without I/O.

use std::collections::{HashMap, VecDeque};

use crate::message::{Headers, Method, Request, Response, SipHeaders, addr_uri, param};

/// Why a request's CSeq is not accepted in a dialog ([`Dialog::accept_remote_cseq`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CSeqError {
    /// No CSeq header, or not a number and a method.
    #[error("the request has no valid CSeq")]
    Missing,
    /// Lower than the last CSeq the peer used in the dialog (RFC 3261 §12.2.2).
    #[error("CSeq {got} is lower than the last one in the dialog ({last})")]
    OutOfOrder {
        /// The request's CSeq number.
        got: u32,
        /// The last one accepted.
        last: u32,
    },
}

impl CSeqError {
    /// The status to answer the request with: 400 without a CSeq, 500 for an old one.
    pub fn status(&self) -> u16 {
        match self {
            CSeqError::Missing => 400,
            CSeqError::OutOfOrder { .. } => 500,
        }
    }
}

/// Why [`ReferSubscriptions::next_event`] has no event to give, ever again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    /// No REFER with this CSeq was sent in the dialog (or the dialog is gone).
    #[error("no subscription for REFER {0}")]
    Unknown(u32),
    /// The subscription has ended and every event was read.
    #[error("the subscription of REFER {0} has ended and every event was read")]
    Ended(u32),
}

/// What identifies a dialog: Call-ID and both tags.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    /// Call-ID.
    pub call_id: String,
    /// Our tag.
    pub local_tag: String,
    /// The peer's tag.
    pub remote_tag: String,
}

/// A dialog's state.
#[derive(Debug, Clone)]
pub struct Dialog {
    /// Call-ID and tags.
    pub id: DialogId,
    /// Our From/To value without the tag (the name-addr we are).
    pub local_uri: String,
    /// The peer's From/To value without the tag.
    pub remote_uri: String,
    /// Where in-dialog requests go: the peer's Contact URI.
    pub remote_target: String,
    /// Route headers for in-dialog requests, in the order they are sent.
    pub route_set: Vec<String>,
    /// The last CSeq we used.
    pub local_cseq: u32,
    /// The last CSeq the peer used.
    pub remote_cseq: Option<u32>,
    /// Our Contact value.
    pub local_contact: String,
}

/// Strips the `tag` parameter from a From/To value.
fn without_tag(value: &str) -> String {
    let (addr, params) = match value.rfind('>') {
        Some(close) => (&value[..=close], &value[close + 1..]),
        None => match value.find(';') {
            Some(semi) => (&value[..semi], &value[semi..]),
            None => (value, ""),
        },
    };
    let kept: Vec<&str> = params
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.to_ascii_lowercase().starts_with("tag="))
        .collect();
    let mut out = addr.trim().to_owned();
    for p in kept {
        out.push(';');
        out.push_str(p);
    }
    out
}

impl Dialog {
    /// The dialog a 2xx to our INVITE creates (we are the UAC): route set from the 2xx's
    /// Record-Route, reversed; remote target from its Contact.
    pub fn uac(invite: &Request, response: &Response, local_contact: &str) -> Option<Dialog> {
        let mut route_set: Vec<String> = response
            .headers
            .all("Record-Route")
            .map(str::to_owned)
            .collect();
        route_set.reverse();
        Some(Dialog {
            id: DialogId {
                call_id: invite.call_id()?.to_owned(),
                local_tag: invite.from_tag()?.to_owned(),
                remote_tag: response.to_tag()?.to_owned(),
            },
            local_uri: without_tag(invite.headers.get("From")?),
            remote_uri: without_tag(response.headers.get("To")?),
            remote_target: response.contact_uri()?.to_owned(),
            route_set,
            local_cseq: invite.cseq()?.seq,
            remote_cseq: None,
            local_contact: local_contact.to_owned(),
        })
    }

    /// The dialog we create by answering `invite` with `local_tag` (we are the UAS): route
    /// set from the INVITE's Record-Route in order; remote target from its Contact.
    pub fn uas(
        invite: &Request,
        local_tag: &str,
        local_contact: &str,
        first_cseq: u32,
    ) -> Option<Dialog> {
        Some(Dialog {
            id: DialogId {
                call_id: invite.call_id()?.to_owned(),
                local_tag: local_tag.to_owned(),
                remote_tag: invite.from_tag()?.to_owned(),
            },
            local_uri: without_tag(invite.headers.get("To")?),
            remote_uri: without_tag(invite.headers.get("From")?),
            remote_target: invite.contact_uri()?.to_owned(),
            route_set: invite
                .headers
                .all("Record-Route")
                .map(str::to_owned)
                .collect(),
            local_cseq: first_cseq,
            remote_cseq: invite.cseq().map(|c| c.seq),
            local_contact: local_contact.to_owned(),
        })
    }

    /// The id a request from the peer would carry in this dialog: To tag is ours, From tag
    /// is theirs.
    pub fn id_of_incoming(request: &Request) -> Option<DialogId> {
        Some(DialogId {
            call_id: request.call_id()?.to_owned(),
            local_tag: request.to_tag()?.to_owned(),
            remote_tag: request.from_tag()?.to_owned(),
        })
    }

    /// Builds the next in-dialog request (a new CSeq, except for ACK, which takes `ack_cseq`).
    /// `via` is our Via value without branch; the branch is given.
    pub fn request(
        &mut self,
        method: Method,
        via: &str,
        branch: &str,
        ack_cseq: Option<u32>,
    ) -> Request {
        let seq = match (&method, ack_cseq) {
            (Method::Ack, Some(seq)) => seq,
            _ => {
                self.local_cseq += 1;
                self.local_cseq
            }
        };
        let mut headers = Headers::new();
        headers.push("Via", format!("{via};branch={branch};rport"));
        headers.push("Max-Forwards", "70");
        headers.push(
            "From",
            format!("{};tag={}", self.local_uri, self.id.local_tag),
        );
        headers.push(
            "To",
            format!("{};tag={}", self.remote_uri, self.id.remote_tag),
        );
        headers.push("Call-ID", self.id.call_id.clone());
        headers.push("CSeq", format!("{seq} {method}"));
        // Loose routing: the Request-URI is the remote target, the route set goes in Route.
        // A strict router (no `lr`) first in the set takes the Request-URI instead.
        let mut uri = self.remote_target.clone();
        let mut routes = self.route_set.clone();
        if let Some(first) = routes.first()
            && param(addr_uri(first).split_once(';').map_or("", |(_, p)| p), "lr").is_none()
        {
            uri = addr_uri(first).to_owned();
            routes.remove(0);
            routes.push(format!("<{}>", self.remote_target));
        }
        for route in routes {
            headers.push("Route", route);
        }
        if method != Method::Ack {
            headers.push("Contact", self.local_contact.clone());
        }
        Request {
            method,
            uri,
            headers,
            body: Vec::new(),
        }
    }

    /// Checks a request from the peer against the remote CSeq (RFC 3261 §12.2.2): a lower one
    /// is refused (answer it with [`CSeqError::status`], 500). ACK and CANCEL reuse their
    /// INVITE's CSeq and are not checked.
    pub fn accept_remote_cseq(&mut self, request: &Request) -> Result<(), CSeqError> {
        if matches!(request.method, Method::Ack | Method::Cancel) {
            return Ok(());
        }
        let seq = request.cseq().map(|c| c.seq).ok_or(CSeqError::Missing)?;
        match self.remote_cseq {
            Some(last) if seq < last => Err(CSeqError::OutOfOrder { got: seq, last }),
            _ => {
                self.remote_cseq = Some(seq);
                Ok(())
            }
        }
    }
}

/// The `Event` header (RFC 6665): package and `id` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The package, lower-cased (`refer`).
    pub package: String,
    /// The `id` parameter.
    pub id: Option<String>,
}

impl Event {
    /// Parses an Event value such as `refer;id=2`.
    pub fn parse(value: &str) -> Option<Event> {
        let mut parts = value.split(';');
        let package = parts.next()?.trim().to_ascii_lowercase();
        if package.is_empty() {
            return None;
        }
        let id = parts.find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("id")
                .then(|| v.trim().to_owned())
        });
        Some(Event { package, id })
    }
}

/// One thing that happened to a REFER's subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionEvent {
    /// A NOTIFY (already answered 200).
    Notify {
        /// Subscription-State, raw.
        state: Option<String>,
        /// Content-Type, raw.
        content_type: Option<String>,
        /// The body.
        body: Vec<u8>,
    },
    /// The dialog ended before the subscription did.
    DialogEnded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubState {
    /// REFER sent, no final response yet: NOTIFYs are accepted (RFC 6665 §4.1.2.4).
    Pending,
    /// Accepted with a subscription.
    Active,
    /// Ended: terminated by a NOTIFY, refused, `Refer-Sub: false`, or the dialog ended.
    Ended,
}

/// Most events queued for the consumer per subscription. A real transfer sends 2 to 6
/// NOTIFYs (100 Trying, 180 Ringing, maybe 183, the final one) and the consumer reads each as
/// it comes, so a full queue means a flood: the oldest queued progress is then dropped for the
/// newest (only the latest progress matters), and the final NOTIFY is always queued.
pub const MAX_QUEUED_EVENTS: usize = 8;

/// Most progress (non-final) NOTIFYs delivered per subscription over its whole life: five
/// times what a real transfer sends. Past it they are answered 200 (so a sane peer does not
/// retransmit) and counted, not delivered; the final NOTIFY is always delivered. This also
/// bounds the consumer's work (the plugin's host calls) whatever the peer sends.
pub const MAX_PROGRESS_NOTIFIES: usize = 32;

#[derive(Debug)]
struct Subscription {
    state: SubState,
    events: VecDeque<SubscriptionEvent>,
    /// The last NOTIFY queued, to recognise a repeat of it.
    last: Option<SubscriptionEvent>,
    /// Progress NOTIFYs queued so far.
    progress: usize,
}

/// The REFER subscriptions of one dialog, keyed by the REFER's CSeq number.
#[derive(Debug, Default)]
pub struct ReferSubscriptions {
    subs: HashMap<u32, Subscription>,
    order: Vec<u32>,
}

/// How to answer a NOTIFY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyVerdict {
    /// 200: delivered to the REFER with this id.
    Accept(u32),
    /// 200, delivered, and the oldest queued progress event was dropped to make room
    /// ([`MAX_QUEUED_EVENTS`]).
    Coalesced(u32),
    /// 200, not delivered: the same Subscription-State, Content-Type and body as the previous
    /// NOTIFY of the subscription.
    Duplicate(u32),
    /// 200, not delivered: past [`MAX_PROGRESS_NOTIFIES`].
    Excess(u32),
    /// 489 Bad Event: not the refer package.
    BadEvent,
    /// 481: no such live subscription.
    NoSubscription,
}

impl ReferSubscriptions {
    /// A REFER with CSeq `refer_id` was sent: its subscription exists from now on, so a
    /// NOTIFY that beats the 2xx is accepted.
    pub fn refer_sent(&mut self, refer_id: u32) {
        self.subs.insert(
            refer_id,
            Subscription {
                state: SubState::Pending,
                events: VecDeque::new(),
                last: None,
                progress: 0,
            },
        );
        self.order.push(refer_id);
    }

    /// The REFER's final response: a 2xx without `Refer-Sub: false` keeps the subscription;
    /// anything else ends it (events already queued stay readable).
    pub fn refer_answered(&mut self, refer_id: u32, response: &Response) {
        let Some(sub) = self.subs.get_mut(&refer_id) else {
            return;
        };
        let accepted = (200..300).contains(&response.status);
        let no_sub = response
            .headers
            .get("Refer-Sub")
            .is_some_and(verbhost_common::subscription::refer_sub_is_false);
        sub.state = match (accepted, no_sub, sub.state) {
            (true, false, SubState::Pending) => SubState::Active,
            (true, false, state) => state,
            _ => SubState::Ended,
        };
    }

    /// The REFER got no response (timeout or transport failure).
    pub fn refer_failed(&mut self, refer_id: u32) {
        if let Some(sub) = self.subs.get_mut(&refer_id) {
            sub.state = SubState::Ended;
        }
    }

    /// Matches a NOTIFY to a subscription and queues it (once: retransmissions are caught
    /// by the transaction layer before this). A repeat of the previous NOTIFY is not queued,
    /// and the queue and the progress delivered are bounded ([`MAX_QUEUED_EVENTS`],
    /// [`MAX_PROGRESS_NOTIFIES`]); the final NOTIFY (`Subscription-State: terminated`) is
    /// always queued.
    pub fn on_notify(&mut self, notify: &Request) -> NotifyVerdict {
        let Some(event) = notify.headers.get("Event").and_then(Event::parse) else {
            return NotifyVerdict::BadEvent;
        };
        if event.package != "refer" {
            return NotifyVerdict::BadEvent;
        }
        // RFC 3515 §2.4.6: the id is the REFER's CSeq; only the first REFER may omit it.
        let refer_id = match event.id {
            Some(id) => match id.parse::<u32>() {
                Ok(id) => id,
                Err(_) => return NotifyVerdict::NoSubscription,
            },
            None => match self.order.first() {
                Some(first) if self.order.len() == 1 => *first,
                _ => return NotifyVerdict::NoSubscription,
            },
        };
        let Some(sub) = self.subs.get_mut(&refer_id) else {
            return NotifyVerdict::NoSubscription;
        };
        if sub.state == SubState::Ended {
            return NotifyVerdict::NoSubscription;
        }
        let state = notify.headers.get("Subscription-State").map(str::to_owned);
        let terminated = state
            .as_deref()
            .and_then(verbhost_common::subscription::parse)
            .is_some_and(|s| s.status == verbhost_common::subscription::Status::Terminated);
        let event = SubscriptionEvent::Notify {
            state,
            content_type: notify.headers.get("Content-Type").map(str::to_owned),
            body: notify.body.clone(),
        };
        if sub.last.as_ref() == Some(&event) {
            return NotifyVerdict::Duplicate(refer_id);
        }
        if terminated {
            sub.state = SubState::Ended;
            sub.last = Some(event.clone());
            sub.events.push_back(event);
            return NotifyVerdict::Accept(refer_id);
        }
        if sub.progress >= MAX_PROGRESS_NOTIFIES {
            return NotifyVerdict::Excess(refer_id);
        }
        sub.progress += 1;
        sub.last = Some(event.clone());
        // Everything queued is progress: the final NOTIFY and DialogEnded end the subscription.
        let coalesced = sub.events.len() >= MAX_QUEUED_EVENTS && sub.events.pop_front().is_some();
        sub.events.push_back(event);
        if coalesced {
            NotifyVerdict::Coalesced(refer_id)
        } else {
            NotifyVerdict::Accept(refer_id)
        }
    }

    /// The dialog ended: every live subscription learns it after what it already has.
    pub fn dialog_ended(&mut self) {
        for sub in self.subs.values_mut() {
            if sub.state != SubState::Ended {
                sub.state = SubState::Ended;
                sub.events.push_back(SubscriptionEvent::DialogEnded);
            }
        }
    }

    /// Whether nothing is left to read: every subscription has ended and all its events were
    /// read (true with no subscription at all).
    pub fn all_read(&self) -> bool {
        self.subs
            .values()
            .all(|sub| sub.state == SubState::Ended && sub.events.is_empty())
    }

    /// The next queued event of `refer_id`, `Ok(None)` when none is queued yet, or why none
    /// will ever come (the id is unknown, or the subscription has ended and was read).
    pub fn next_event(
        &mut self,
        refer_id: u32,
    ) -> Result<Option<SubscriptionEvent>, SubscriptionError> {
        let sub = self
            .subs
            .get_mut(&refer_id)
            .ok_or(SubscriptionError::Unknown(refer_id))?;
        match sub.events.pop_front() {
            Some(event) => Ok(Some(event)),
            None if sub.state == SubState::Ended => Err(SubscriptionError::Ended(refer_id)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use crate::wire::parse;

    fn request(text: &str) -> Request {
        match parse(text.replace('\n', "\r\n").as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn response(text: &str) -> Response {
        match parse(text.replace('\n', "\r\n").as_bytes()) {
            Ok(Message::Response(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    const INVITE: &str = "INVITE sip:bob@127.0.0.1:5090 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1
From: \"Alice\" <sip:alice@127.0.0.1:5070>;tag=a1
To: <sip:bob@127.0.0.1:5090>
Call-ID: c1
CSeq: 1 INVITE
Contact: <sip:alice@127.0.0.1:5070>
Content-Length: 0

";

    fn ok_200() -> Response {
        response(
            "SIP/2.0 200 OK
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1
Record-Route: <sip:p1.example;lr>, <sip:p2.example;lr>
Record-Route: <sip:p3.example;lr>
From: \"Alice\" <sip:alice@127.0.0.1:5070>;tag=a1
To: <sip:bob@127.0.0.1:5090>;tag=b1
Call-ID: c1
CSeq: 1 INVITE
Contact: <sip:bob-0x55@127.0.0.1:5090;transport=udp>
Content-Length: 0

",
        )
    }

    #[test]
    fn uac_dialog_reverses_the_whole_record_route_and_targets_the_contact() {
        let invite = request(INVITE);
        let mut dialog = Dialog::uac(&invite, &ok_200(), "<sip:alice@127.0.0.1:5070>").unwrap();
        assert_eq!(
            dialog.route_set,
            [
                "<sip:p3.example;lr>",
                "<sip:p2.example;lr>",
                "<sip:p1.example;lr>"
            ]
        );
        let refer = dialog.request(
            Method::Refer,
            "SIP/2.0/UDP 127.0.0.1:5070",
            "z9hG4bKr",
            None,
        );
        assert_eq!(refer.uri, "sip:bob-0x55@127.0.0.1:5090;transport=udp");
        assert_eq!(refer.cseq().unwrap().seq, 2);
        assert_eq!(
            refer.headers.get("From"),
            Some("\"Alice\" <sip:alice@127.0.0.1:5070>;tag=a1")
        );
        assert_eq!(
            refer.headers.get("To"),
            Some("<sip:bob@127.0.0.1:5090>;tag=b1")
        );
        assert_eq!(
            refer.headers.all("Route").collect::<Vec<_>>(),
            dialog.route_set
        );
        let bye = dialog.request(Method::Bye, "SIP/2.0/UDP 127.0.0.1:5070", "z9hG4bKb", None);
        assert_eq!(
            bye.cseq().unwrap().seq,
            3,
            "every new request takes the next CSeq"
        );
        let ack = dialog.request(
            Method::Ack,
            "SIP/2.0/UDP 127.0.0.1:5070",
            "z9hG4bKa",
            Some(1),
        );
        assert_eq!(ack.cseq().unwrap().seq, 1, "ACK keeps the INVITE's CSeq");
        assert_eq!(dialog.local_cseq, 3);
    }

    #[test]
    fn uas_dialog_keeps_record_route_order_and_rejects_old_cseqs() {
        let mut invite_text = INVITE.replace(
            "Contact:",
            "Record-Route: <sip:p1;lr>\nRecord-Route: <sip:p2;lr>\nContact:",
        );
        invite_text = invite_text.replace("CSeq: 1 INVITE", "CSeq: 10 INVITE");
        let invite = request(&invite_text);
        let mut dialog = Dialog::uas(&invite, "v1", "<sip:verbhost@127.0.0.1:5060>", 100).unwrap();
        assert_eq!(dialog.route_set, ["<sip:p1;lr>", "<sip:p2;lr>"]);
        assert_eq!(dialog.remote_target, "sip:alice@127.0.0.1:5070");
        let notify = |seq: u32| {
            request(&format!(
                "NOTIFY sip:v@h SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK{seq}\nFrom: <sip:alice@h>;tag=a1\nTo: <sip:v@h>;tag=v1\nCall-ID: c1\nCSeq: {seq} NOTIFY\nContent-Length: 0\n\n"
            ))
        };
        assert_eq!(Dialog::id_of_incoming(&notify(11)), Some(dialog.id.clone()));
        assert_eq!(dialog.accept_remote_cseq(&notify(11)), Ok(()));
        let old = dialog.accept_remote_cseq(&notify(9));
        assert_eq!(old, Err(CSeqError::OutOfOrder { got: 9, last: 11 }));
        assert_eq!(old.map_err(|e| e.status()), Err(500));
    }

    #[test]
    fn strict_routers_take_the_request_uri() {
        let invite = request(INVITE);
        let mut ok = ok_200();
        ok.headers.remove("Record-Route");
        ok.headers.push("Record-Route", "<sip:strict.example>");
        let mut dialog = Dialog::uac(&invite, &ok, "<sip:alice@h>").unwrap();
        let bye = dialog.request(Method::Bye, "SIP/2.0/UDP h", "z9hG4bKx", None);
        assert_eq!(bye.uri, "sip:strict.example");
        assert_eq!(
            bye.headers.get("Route"),
            Some("<sip:bob-0x55@127.0.0.1:5090;transport=udp>")
        );
    }

    fn notify(event: &str, state: &str, body: &str) -> Request {
        request(&format!(
            "NOTIFY sip:a@h SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bKn\nFrom: <sip:b@h>;tag=b1\nTo: <sip:a@h>;tag=a1\nCall-ID: c1\nCSeq: 7 NOTIFY\n{event}Subscription-State: {state}\nContent-Type: message/sipfrag\nContent-Length: {}\n\n{body}",
            body.len()
        ))
    }

    #[test]
    fn notifies_are_matched_by_event_id_and_refused_otherwise() {
        let mut subs = ReferSubscriptions::default();
        subs.refer_sent(2);
        // Before the 2xx: accepted.
        assert_eq!(
            subs.on_notify(&notify(
                "Event: refer;id=2\n",
                "active",
                "SIP/2.0 100 Trying"
            )),
            NotifyVerdict::Accept(2)
        );
        assert_eq!(
            subs.on_notify(&notify("o: REFER\n", "active", "SIP/2.0 180 Ringing")),
            NotifyVerdict::Accept(2),
            "only REFER may omit id"
        );
        assert_eq!(
            subs.on_notify(&notify("Event: presence\n", "active", "")),
            NotifyVerdict::BadEvent
        );
        assert_eq!(
            subs.on_notify(&notify("", "active", "")),
            NotifyVerdict::BadEvent
        );
        assert_eq!(
            subs.on_notify(&notify("Event: refer;id=3\n", "active", "")),
            NotifyVerdict::NoSubscription
        );
        let accepted = response(
            "SIP/2.0 202 Accepted\nVia: SIP/2.0/UDP h;branch=z9hG4bKr\nFrom: <sip:a@h>;tag=a1\nTo: <sip:b@h>;tag=b1\nCall-ID: c1\nCSeq: 2 REFER\nContent-Length: 0\n\n",
        );
        subs.refer_answered(2, &accepted);
        assert_eq!(
            subs.on_notify(&notify(
                "Event: refer;id=2\n",
                "terminated;reason=noresource",
                "SIP/2.0 200 OK"
            )),
            NotifyVerdict::Accept(2)
        );
        assert_eq!(
            subs.on_notify(&notify(
                "Event: refer;id=2\n",
                "terminated",
                "SIP/2.0 200 OK"
            )),
            NotifyVerdict::NoSubscription,
            "ended"
        );
        let mut bodies = Vec::new();
        while let Ok(Some(SubscriptionEvent::Notify { body, .. })) = subs.next_event(2) {
            bodies.push(String::from_utf8(body).unwrap());
        }
        assert_eq!(
            bodies,
            [
                "SIP/2.0 100 Trying",
                "SIP/2.0 180 Ringing",
                "SIP/2.0 200 OK"
            ]
        );
        assert_eq!(
            subs.next_event(2),
            Err(SubscriptionError::Ended(2)),
            "ended and drained"
        );
    }

    #[test]
    fn refer_sub_false_and_failures_end_the_subscription_and_bye_is_queued_last() {
        let mut subs = ReferSubscriptions::default();
        subs.refer_sent(2);
        let no_sub = response(
            "SIP/2.0 202 Accepted\nVia: SIP/2.0/UDP h;branch=z9hG4bKr\nFrom: <sip:a@h>;tag=a1\nTo: <sip:b@h>;tag=b1\nCall-ID: c1\nCSeq: 2 REFER\nRefer-Sub: false\nContent-Length: 0\n\n",
        );
        subs.refer_answered(2, &no_sub);
        assert_eq!(
            subs.on_notify(&notify("Event: refer;id=2\n", "active", "")),
            NotifyVerdict::NoSubscription
        );
        subs.refer_sent(3);
        subs.refer_sent(4);
        assert_eq!(
            subs.on_notify(&notify("Event: refer\n", "active", "")),
            NotifyVerdict::NoSubscription,
            "ambiguous without id"
        );
        subs.refer_failed(4);
        assert_eq!(
            subs.on_notify(&notify(
                "Event: refer;id=3\n",
                "active",
                "SIP/2.0 100 Trying"
            )),
            NotifyVerdict::Accept(3)
        );
        subs.dialog_ended();
        assert!(matches!(
            subs.next_event(3),
            Ok(Some(SubscriptionEvent::Notify { .. }))
        ));
        assert_eq!(subs.next_event(3), Ok(Some(SubscriptionEvent::DialogEnded)));
        assert_eq!(subs.next_event(3), Err(SubscriptionError::Ended(3)));
        assert_eq!(subs.next_event(9), Err(SubscriptionError::Unknown(9)));
    }

    fn drain(subs: &mut ReferSubscriptions, refer_id: u32) -> Vec<SubscriptionEvent> {
        let mut events = Vec::new();
        while let Ok(Some(event)) = subs.next_event(refer_id) {
            events.push(event);
        }
        events
    }

    fn body_of(event: &SubscriptionEvent) -> String {
        match event {
            SubscriptionEvent::Notify { body, .. } => String::from_utf8_lossy(body).into_owned(),
            SubscriptionEvent::DialogEnded => "(dialog ended)".into(),
        }
    }

    #[test]
    fn a_repeated_notify_is_answered_but_queued_once() {
        let mut subs = ReferSubscriptions::default();
        subs.refer_sent(2);
        let trying = notify("Event: refer;id=2\n", "active", "SIP/2.0 100 Trying");
        assert_eq!(subs.on_notify(&trying), NotifyVerdict::Accept(2));
        for _ in 0..4 {
            assert_eq!(subs.on_notify(&trying), NotifyVerdict::Duplicate(2));
        }
        assert_eq!(drain(&mut subs, 2).len(), 1);
        // Once read, the same NOTIFY again is still a repeat of the last one.
        subs.on_notify(&trying);
        assert_eq!(drain(&mut subs, 2).len(), 0);
        // Another state with the same body is news.
        subs.on_notify(&notify(
            "Event: refer;id=2\n",
            "pending",
            "SIP/2.0 100 Trying",
        ));
        subs.on_notify(&notify(
            "Event: refer;id=2\n",
            "pending",
            "SIP/2.0 180 Ringing",
        ));
        assert_eq!(drain(&mut subs, 2).len(), 2);
    }

    #[test]
    fn a_notify_flood_is_bounded_and_the_final_notify_is_never_lost() {
        let mut subs = ReferSubscriptions::default();
        subs.refer_sent(2);
        let mut verdicts = Vec::new();
        for i in 0..10_000 {
            verdicts.push(subs.on_notify(&notify(
                "Event: refer;id=2\n",
                "active",
                &format!("SIP/2.0 180 Ringing {i}"),
            )));
        }
        let counted =
            |wanted: fn(&NotifyVerdict) -> bool| verdicts.iter().filter(|v| wanted(v)).count();
        assert_eq!(
            counted(|v| matches!(v, NotifyVerdict::Accept(2))),
            MAX_QUEUED_EVENTS
        );
        assert_eq!(
            counted(|v| matches!(v, NotifyVerdict::Coalesced(2))),
            MAX_PROGRESS_NOTIFIES - MAX_QUEUED_EVENTS
        );
        assert_eq!(
            counted(|v| matches!(v, NotifyVerdict::Excess(2))),
            10_000 - MAX_PROGRESS_NOTIFIES
        );
        assert_eq!(
            subs.on_notify(&notify(
                "Event: refer;id=2\n",
                "terminated;reason=noresource",
                "SIP/2.0 200 OK"
            )),
            NotifyVerdict::Accept(2),
            "the final NOTIFY is queued even past every limit"
        );
        let events = drain(&mut subs, 2);
        assert!(events.len() <= 9, "{} queued", events.len());
        assert_eq!(
            events.last().map(body_of).as_deref(),
            Some("SIP/2.0 200 OK")
        );
        // A full queue keeps the newest progress (up to the limit on progress).
        assert_eq!(events.len(), MAX_QUEUED_EVENTS + 1);
        assert_eq!(
            events.iter().rev().nth(1).map(body_of).as_deref(),
            Some("SIP/2.0 180 Ringing 31")
        );
        assert_eq!(subs.next_event(2).ok(), None, "ended and drained");
    }

    #[test]
    fn a_consumer_that_keeps_up_still_sees_a_bounded_number_of_notifies() {
        let mut subs = ReferSubscriptions::default();
        subs.refer_sent(2);
        let mut seen = 0;
        for i in 0..10_000 {
            subs.on_notify(&notify(
                "Event: refer;id=2\n",
                "active",
                &format!("SIP/2.0 180 Ringing {i}"),
            ));
            seen += drain(&mut subs, 2).len();
        }
        subs.on_notify(&notify(
            "Event: refer;id=2\n",
            "terminated",
            "SIP/2.0 486 Busy Here",
        ));
        let rest = drain(&mut subs, 2);
        assert_eq!(
            rest.last().map(body_of).as_deref(),
            Some("SIP/2.0 486 Busy Here")
        );
        seen += rest.len();
        assert!(seen <= 33, "{seen} events delivered");
    }

    #[test]
    fn refer_sub_false_with_extension_parameters_means_no_subscription() {
        for value in ["false;x=1", "FALSE ; x=1", " False", "false;"] {
            let mut subs = ReferSubscriptions::default();
            subs.refer_sent(2);
            let no_sub = response(&format!(
                "SIP/2.0 202 Accepted\nVia: SIP/2.0/UDP h;branch=z9hG4bKr\nFrom: <sip:a@h>;tag=a1\nTo: <sip:b@h>;tag=b1\nCall-ID: c1\nCSeq: 2 REFER\nRefer-Sub: {value}\nContent-Length: 0\n\n"
            ));
            subs.refer_answered(2, &no_sub);
            assert_eq!(
                subs.on_notify(&notify("Event: refer;id=2\n", "active", "")),
                NotifyVerdict::NoSubscription,
                "Refer-Sub: {value}"
            );
        }
        let mut subs = ReferSubscriptions::default();
        subs.refer_sent(2);
        let with_sub = response(
            "SIP/2.0 202 Accepted\nVia: SIP/2.0/UDP h;branch=z9hG4bKr\nFrom: <sip:a@h>;tag=a1\nTo: <sip:b@h>;tag=b1\nCall-ID: c1\nCSeq: 2 REFER\nRefer-Sub: true;x=false\nContent-Length: 0\n\n",
        );
        subs.refer_answered(2, &with_sub);
        assert_eq!(
            subs.on_notify(&notify("Event: refer;id=2\n", "active", "")),
            NotifyVerdict::Accept(2)
        );
    }
}
