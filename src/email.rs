//! Email identity as Odoo and Mailchimp each see it.
//!
//! Odoo matches partners on the output of its `email_normalize`, while Mailchimp keys
//! members by the MD5 of the fully lower-cased address. The two disagree for non-ASCII
//! local parts, so both forms are computed once, side by side, instead of one being
//! derived from the other later on.

use md5::{Digest, Md5};

/// The longest address that fits an SMTP forward path once the angle brackets are added.
const MAX_ADDRESS_BYTES: usize = 254;

/// An address in the two forms the sync needs: Odoo's normalized one and Mailchimp's hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailIdentity {
    pub normalized: String,
    pub subscriber_hash: String,
}

impl EmailIdentity {
    /// Extracts and normalizes the first address in `raw`; `None` when there is none usable.
    pub fn parse(raw: &str) -> Option<Self> {
        let normalized = normalize(raw)?;
        let subscriber_hash = subscriber_hash(&normalized);
        Some(Self {
            normalized,
            subscriber_hash,
        })
    }
}

/// Mirrors Odoo's `email_normalize(text, strict=False)`, plus a plausibility check.
///
/// The first address containing `@` wins; the domain is always lower-cased, the local
/// part only when it is pure ASCII, because Odoo keeps non-ASCII local parts verbatim.
pub fn normalize(raw: &str) -> Option<String> {
    let address = first_address(raw)?;
    let normalized = lower_case_parts(&address)?;
    is_plausible(&normalized).then_some(normalized)
}

/// Mailchimp's subscriber hash: lowercase hex MD5 of the address, fully lower-cased.
///
/// Unlike [`normalize`], non-ASCII local parts are lower-cased too, because that is
/// what Mailchimp does before hashing.
pub fn subscriber_hash(address: &str) -> String {
    format!("{:x}", Md5::digest(address.to_lowercase().as_bytes()))
}

/// Splitting at the last `@` matches Odoo, so a quoted `@` in the local part stays there.
fn lower_case_parts(address: &str) -> Option<String> {
    let (local, domain) = address.rsplit_once('@')?;
    let local = if local.is_ascii() {
        local.to_ascii_lowercase()
    } else {
        local.to_owned()
    };
    Some(format!("{local}@{}", domain.to_lowercase()))
}

fn is_plausible(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    address.len() <= MAX_ADDRESS_BYTES
        && !local.is_empty()
        && !domain.is_empty()
        && !address.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The first entry of an address list that looks like an address, as `getaddresses`
/// would split it: commas inside quotes, comments or angle brackets do not separate.
fn first_address(text: &str) -> Option<String> {
    let labelled = label(text);
    labelled
        .split(|&(c, context)| c == ',' && context == Context::Plain)
        .map(address_in)
        .find(|address| address.contains('@'))
}

/// An angle-bracketed address wins over the display name around it; without one, the
/// comments are dropped and whatever remains is the address.
fn address_in(entry: &[(char, Context)]) -> String {
    let address = angle_address(entry).unwrap_or_else(|| without_comments(entry));
    address.trim().to_owned()
}

fn angle_address(entry: &[(char, Context)]) -> Option<String> {
    let open = entry
        .iter()
        .position(|&(_, context)| context == Context::Angle)?;
    let inner = entry[open + 1..]
        .iter()
        .take_while(|&&(c, context)| context == Context::Angle && c != '>');
    Some(inner.map(|&(c, _)| c).collect())
}

fn without_comments(entry: &[(char, Context)]) -> String {
    entry
        .iter()
        .filter(|&&(_, context)| context != Context::Comment)
        .map(|&(c, _)| c)
        .collect()
}

/// Where a character sits in an address list; delimiters carry the context they open
/// or close, so `<` and `>` are `Angle` and the quotes of a quoted string are `Quoted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Plain,
    Quoted,
    Comment,
    Angle,
}

fn label(text: &str) -> Vec<(char, Context)> {
    let mut lexer = Lexer::default();
    text.chars().map(|c| (c, lexer.feed(c))).collect()
}

/// Just enough of RFC 5322's lexical rules to tell separators from content.
#[derive(Default)]
struct Lexer {
    quoted: bool,
    escaped: bool,
    comment_depth: usize,
    angle: bool,
}

impl Lexer {
    fn feed(&mut self, c: char) -> Context {
        if self.quoted {
            self.feed_quoted(c);
            return Context::Quoted;
        }
        if self.comment_depth > 0 {
            self.feed_comment(c);
            return Context::Comment;
        }
        if self.angle {
            self.angle = c != '>';
            return Context::Angle;
        }
        self.open(c)
    }

    fn open(&mut self, c: char) -> Context {
        match c {
            '"' => self.quoted = true,
            '(' => self.comment_depth = 1,
            '<' => self.angle = true,
            _ => return Context::Plain,
        }
        self.current()
    }

    fn current(&self) -> Context {
        if self.quoted {
            Context::Quoted
        } else if self.comment_depth > 0 {
            Context::Comment
        } else {
            Context::Angle
        }
    }

    fn feed_quoted(&mut self, c: char) {
        if self.escaped {
            self.escaped = false;
        } else if c == '\\' {
            self.escaped = true;
        } else if c == '"' {
            self.quoted = false;
        }
    }

    /// Comments nest, and a backslash escapes the next character inside them.
    fn feed_comment(&mut self, c: char) {
        if self.escaped {
            self.escaped = false;
            return;
        }
        match c {
            '\\' => self.escaped = true,
            '(' => self.comment_depth += 1,
            ')' => self.comment_depth -= 1,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md5_hex(text: &str) -> String {
        format!("{:x}", Md5::digest(text.as_bytes()))
    }

    #[test]
    fn plain_address_is_kept() {
        assert_eq!(
            normalize("hana.kato@example.org").as_deref(),
            Some("hana.kato@example.org")
        );
    }

    #[test]
    fn mixed_case_is_lowered() {
        assert_eq!(
            normalize("Hana.Kato@Example.org").as_deref(),
            Some("hana.kato@example.org")
        );
    }

    #[test]
    fn surrounding_whitespace_is_ignored() {
        assert_eq!(normalize("  a@b.c \t").as_deref(), Some("a@b.c"));
    }

    #[test]
    fn quoted_display_name_is_dropped() {
        assert_eq!(
            normalize("\"Name\" <Addr@Dom.COM>").as_deref(),
            Some("addr@dom.com")
        );
    }

    #[test]
    fn comma_inside_quoted_name_does_not_split() {
        assert_eq!(
            normalize("\"Kato, Hana\" <Hana@Example.org>").as_deref(),
            Some("hana@example.org")
        );
    }

    #[test]
    fn first_of_several_addresses_wins() {
        assert_eq!(
            normalize("Name <a@b.c>, other <d@e.f>").as_deref(),
            Some("a@b.c")
        );
    }

    #[test]
    fn entries_without_at_sign_are_skipped() {
        assert_eq!(
            normalize("just a name, Other <D@E.f>").as_deref(),
            Some("d@e.f")
        );
    }

    #[test]
    fn trailing_comment_is_dropped() {
        assert_eq!(
            normalize("hana@example.org (Hana, Kato)").as_deref(),
            Some("hana@example.org")
        );
    }

    #[test]
    fn plus_tag_is_kept() {
        assert_eq!(
            normalize("Jo+News@Example.com").as_deref(),
            Some("jo+news@example.com")
        );
    }

    #[test]
    fn non_ascii_local_part_is_kept_verbatim() {
        assert_eq!(
            normalize("Jörg.M@Exämple.DE").as_deref(),
            Some("Jörg.M@exämple.de")
        );
    }

    #[test]
    fn non_ascii_hash_lowers_the_whole_address() {
        let identity = EmailIdentity::parse("Jörg.M@Exämple.DE").unwrap();
        assert_eq!(identity.subscriber_hash, md5_hex("jörg.m@exämple.de"));
        assert_ne!(identity.subscriber_hash, md5_hex(&identity.normalized));
    }

    #[test]
    fn hash_matches_md5_of_lowered_address() {
        let identity = EmailIdentity::parse("Hana.Kato@Example.org").unwrap();
        assert_eq!(identity.subscriber_hash, md5_hex("hana.kato@example.org"));
    }

    #[test]
    fn hash_matches_known_vector() {
        assert_eq!(
            subscriber_hash("Urist.McVankab@FreddiesJokes.com"),
            "62eeb292278cc15f5817cb78f7790b08"
        );
    }

    #[test]
    fn garbage_is_rejected() {
        for raw in [
            "",
            "no-at-sign",
            "@x",
            "a@",
            "a b@c.d",
            "<>",
            "a\u{7}@b.c",
            "(a@b.c)",
        ] {
            assert_eq!(normalize(raw), None, "{raw:?}");
        }
    }

    #[test]
    fn overlong_address_is_rejected() {
        let domain = "@example.org";
        let fits = "a".repeat(MAX_ADDRESS_BYTES - domain.len()) + domain;
        assert_eq!(normalize(&fits).as_deref(), Some(fits.as_str()));
        assert_eq!(normalize(&format!("a{fits}")), None);
    }

    #[test]
    fn last_at_sign_splits_local_from_domain() {
        assert_eq!(
            normalize("\"A@B\"@Example.ORG").as_deref(),
            Some("\"a@b\"@example.org")
        );
    }
}
