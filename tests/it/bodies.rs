//! Webhook bodies shaped as Mailchimp sends them: form-encoded, brackets percent-encoded,
//! spaces as `+`. All people, addresses and ids are invented.

use std::hash::{DefaultHasher, Hash, Hasher};

/// Two audiences of the test account.
pub const LIST_A: &str = "aa11bb22cc";
pub const LIST_B: &str = "dd33ee44ff";

/// A webhook body, field by field, in the order Mailchimp writes them.
#[derive(Debug, Clone)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    /// A body with `type` and `fired_at` (`YYYY-MM-DD HH:MM:SS`, UTC).
    pub fn event(event_type: &str, fired_at: &str) -> Form {
        Form { pairs: Vec::new() }
            .with("type", event_type)
            .with("fired_at", fired_at)
    }

    /// Sets a field, replacing its value when it is already there.
    pub fn with(mut self, key: &str, value: &str) -> Form {
        match self.pairs.iter_mut().find(|(held, _)| held == key) {
            Some((_, held)) => *held = value.to_owned(),
            None => self.pairs.push((key.to_owned(), value.to_owned())),
        }
        self
    }

    pub fn encode(&self) -> String {
        let pairs = self
            .pairs
            .iter()
            .map(|(key, value)| format!("{}={}", escape(key), escape(value)));
        pairs.collect::<Vec<_>>().join("&")
    }
}

/// Form encoding: unreserved bytes as they are, a space as `+`, anything else as `%XX`.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(byte));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// The Mailchimp member id (`data[id]`) the test bodies give an address by default.
pub fn member_id(email: &str) -> String {
    let mut hasher = DefaultHasher::new();
    email.to_lowercase().hash(&mut hasher);
    format!("{:010x}", hasher.finish() & 0xff_ffff_ffff)
}

/// The member fields subscribe, unsubscribe and profile events carry.
fn member(event_type: &str, list_id: &str, email: &str, fired_at: &str) -> Form {
    Form::event(event_type, fired_at)
        .with("data[id]", &member_id(email))
        .with("data[list_id]", list_id)
        .with("data[email]", email)
        .with("data[email_type]", "html")
        .with("data[merges][EMAIL]", email)
        .with("data[merges][FNAME]", "Robin")
        .with("data[merges][LNAME]", "Vale")
}

pub fn subscribe(list_id: &str, email: &str, fired_at: &str) -> Form {
    member("subscribe", list_id, email, fired_at).with("data[ip_opt]", "198.51.100.7")
}

pub fn unsubscribe(list_id: &str, email: &str, fired_at: &str) -> Form {
    Form::event("unsubscribe", fired_at)
        .with("data[action]", "unsub")
        .with("data[reason]", "manual")
        .with("data[id]", &member_id(email))
        .with("data[list_id]", list_id)
        .with("data[email]", email)
        .with("data[merges][EMAIL]", email)
}

/// An `unsubscribe` with `action=delete`: the member was deleted from the audience.
pub fn delete(list_id: &str, email: &str, fired_at: &str) -> Form {
    unsubscribe(list_id, email, fired_at).with("data[action]", "delete")
}

pub fn profile(list_id: &str, email: &str, fired_at: &str) -> Form {
    member("profile", list_id, email, fired_at)
}

pub fn upemail(list_id: &str, old_email: &str, new_email: &str, fired_at: &str) -> Form {
    Form::event("upemail", fired_at)
        .with("data[list_id]", list_id)
        .with("data[new_id]", &member_id(new_email))
        .with("data[new_email]", new_email)
        .with("data[old_email]", old_email)
}

pub fn cleaned(list_id: &str, email: &str, fired_at: &str) -> Form {
    Form::event("cleaned", fired_at)
        .with("data[list_id]", list_id)
        .with("data[campaign_id]", "4a3b2c1d0e")
        .with("data[reason]", "hard")
        .with("data[email]", email)
}
