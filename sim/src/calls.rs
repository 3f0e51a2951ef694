//! Basic call control: enough to drive the call packages' events. A call is two call halves;
//! dialling a simulated user's number or extension alerts that user, any other address is a
//! network call with no second half.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::directory::{Directory, User};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Personality {
    Originator,
    Terminator,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    Alerting,
    Active,
    Released,
}

/// Who is on the other end of a call half.
#[derive(Debug, Clone)]
pub struct RemoteParty {
    pub name: Option<String>,
    pub address: String,
    pub user_id: Option<String>,
    /// `Group` for a simulated user, `Network` otherwise.
    pub call_type: &'static str,
}

#[derive(Debug, Clone)]
pub struct CallHalf {
    pub id: String,
    pub ext_tracking_id: String,
    pub user_id: String,
    pub personality: Personality,
    pub state: CallState,
    pub remote: RemoteParty,
    /// Epoch milliseconds, as BroadWorks reports times.
    pub start_time: u64,
    pub answer_time: Option<u64>,
    pub release_time: Option<u64>,
    /// `localRelease` or `remoteRelease` once released.
    pub releasing_party: Option<&'static str>,
    peer: Option<String>,
}

/// What a call-control command changed: the halves to report, each with its event type.
pub type Changes = Vec<(CallHalf, &'static str)>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CallError {
    #[error("[Error 4000] an address to call is required")]
    NoAddress,
    #[error("[Error 4008] Call not found")]
    NotFound,
    #[error("[Error 4001] Only an alerting terminating call can be answered")]
    NotAlerting,
}

#[derive(Debug, Default)]
pub struct Calls {
    halves: HashMap<String, CallHalf>,
    counter: u64,
}

/// Now, in epoch milliseconds as BroadWorks reports times.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn tel(number: &str) -> String {
    if number.starts_with("tel:") {
        number.to_owned()
    } else {
        format!("tel:{number}")
    }
}

fn full_name(user: &User) -> Option<String> {
    match (&user.first_name, &user.last_name) {
        (Some(first), Some(last)) => Some(format!("{first} {last}")),
        (Some(one), None) | (None, Some(one)) => Some(one.clone()),
        (None, None) => None,
    }
}

impl Calls {
    /// A fresh call id and external tracking id.
    pub fn new_ids(&mut self) -> (String, String) {
        self.counter += 1;
        (
            format!("callhalf-{}:0", self.counter * 2),
            format!("{}:1", self.counter),
        )
    }

    /// `POST …/calls/new?address=`: the caller's half (`CallOriginatedEvent`) and, when the
    /// address is a simulated user's number or extension, that user's alerting half
    /// (`CallReceivedEvent`).
    pub fn dial(
        &mut self,
        caller: &User,
        address: &str,
        directory: &Directory,
    ) -> Result<(CallHalf, Changes), CallError> {
        let address = address.trim();
        if address.is_empty() {
            return Err(CallError::NoAddress);
        }
        let bare = address.trim_start_matches("tel:");
        let callee = directory
            .users()
            .find(|u| u.number.as_deref() == Some(bare) || u.extension.as_deref() == Some(bare))
            .filter(|u| !u.user_id.eq_ignore_ascii_case(&caller.user_id))
            .cloned();
        let (origin_id, tracking) = self.new_ids();
        let start_time = now_ms();
        let mut origin = CallHalf {
            id: origin_id.clone(),
            ext_tracking_id: tracking.clone(),
            user_id: caller.user_id.clone(),
            personality: Personality::Originator,
            state: CallState::Alerting,
            remote: RemoteParty {
                name: callee.as_ref().and_then(full_name),
                address: tel(address),
                user_id: callee.as_ref().map(|u| u.user_id.clone()),
                call_type: if callee.is_some() { "Group" } else { "Network" },
            },
            start_time,
            answer_time: None,
            release_time: None,
            releasing_party: None,
            peer: None,
        };
        let mut changes = Vec::new();
        if let Some(callee) = callee {
            let terminator = CallHalf {
                id: format!("callhalf-{}:0", self.counter * 2 + 1),
                ext_tracking_id: tracking,
                user_id: callee.user_id,
                personality: Personality::Terminator,
                state: CallState::Alerting,
                remote: RemoteParty {
                    name: full_name(caller),
                    address: tel(caller
                        .number
                        .as_deref()
                        .or(caller.extension.as_deref())
                        .unwrap_or("unknown")),
                    user_id: Some(caller.user_id.clone()),
                    call_type: "Group",
                },
                start_time,
                answer_time: None,
                release_time: None,
                releasing_party: None,
                peer: Some(origin_id.clone()),
            };
            origin.peer = Some(terminator.id.clone());
            changes.push((terminator.clone(), "CallReceivedEvent"));
            self.halves.insert(terminator.id.clone(), terminator);
        }
        changes.insert(0, (origin.clone(), "CallOriginatedEvent"));
        self.halves.insert(origin_id, origin.clone());
        Ok((origin, changes))
    }

    /// `PUT …/calls/<id>/Talk` on an alerting terminating half: both halves become active.
    pub fn answer(&mut self, user_id: &str, id: &str) -> Result<Changes, CallError> {
        let half = self.owned(user_id, id)?;
        if half.personality != Personality::Terminator || half.state != CallState::Alerting {
            return Err(CallError::NotAlerting);
        }
        let peer = half.peer.clone();
        let time = now_ms();
        let mut changes = Vec::new();
        for id in std::iter::once(id.to_owned()).chain(peer) {
            if let Some(half) = self.halves.get_mut(&id) {
                half.state = CallState::Active;
                half.answer_time = Some(time);
                changes.push((half.clone(), "CallAnsweredEvent"));
            }
        }
        Ok(changes)
    }

    /// `DELETE …/calls/<id>`: both halves are released and forgotten.
    pub fn release(&mut self, user_id: &str, id: &str) -> Result<Changes, CallError> {
        let peer = self.owned(user_id, id)?.peer.clone();
        let time = now_ms();
        let mut changes = Vec::new();
        for (id, party) in std::iter::once((id.to_owned(), "localRelease"))
            .chain(peer.map(|p| (p, "remoteRelease")))
        {
            if let Some(mut half) = self.halves.remove(&id) {
                half.state = CallState::Released;
                half.release_time = Some(time);
                half.releasing_party = Some(party);
                changes.push((half, "CallReleasedEvent"));
            }
        }
        Ok(changes)
    }

    /// A user's current calls, oldest first.
    pub fn of_user(&self, user_id: &str) -> Vec<&CallHalf> {
        let mut calls: Vec<&CallHalf> = self
            .halves
            .values()
            .filter(|h| h.user_id.eq_ignore_ascii_case(user_id))
            .collect();
        calls.sort_by(|a, b| (a.start_time, &a.id).cmp(&(b.start_time, &b.id)));
        calls
    }

    fn owned(&self, user_id: &str, id: &str) -> Result<&CallHalf, CallError> {
        self.halves
            .get(id)
            .filter(|h| h.user_id.eq_ignore_ascii_case(user_id))
            .ok_or(CallError::NotFound)
    }
}
