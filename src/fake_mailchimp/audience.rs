//! One audience's members, generated and stored, and the queries the members endpoint
//! answers over them.
//!
//! Generated members are never held in memory in bulk: member `i` is computed from `i` when
//! asked for, and only members a test added or changed are stored. A changed generated
//! member keeps its place. Because generated members' `last_changed` never decreases with
//! `i`, a time window over them is a range of indexes and the statuses repeat with a fixed
//! period, so a page is found by counting, not by scanning: a request costs time in
//! proportion to its page and to the number of stored members, never to the audience size.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::member::{
    Member, SYNTHETIC_STATUSES, subscriber_hash, synthetic_email, synthetic_index,
    synthetic_last_changed, synthetic_member,
};

/// A member's place in the default order: generated members first, by index, then added
/// members in the order they were added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Pos {
    Generated(u64),
    Added(u64),
}

/// Which members a listing shows.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    /// `None` shows every status but `archived`, as Mailchimp's unfiltered listing does.
    pub status: Option<String>,
    /// Exclusive lower bound on `last_changed`.
    pub since: Option<DateTime<Utc>>,
    /// Inclusive upper bound on `last_changed`.
    pub before: Option<DateTime<Utc>>,
}

impl Filter {
    fn matches(&self, member: &Member) -> bool {
        let status = match &self.status {
            Some(status) => member.status == *status,
            None => member.status != "archived",
        };
        status && self.in_window(member.last_changed)
    }

    fn in_window(&self, at: DateTime<Utc>) -> bool {
        self.since.is_none_or(|since| at > since) && self.before.is_none_or(|before| at <= before)
    }
}

/// The order of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    Insertion,
    LastChanged { descending: bool },
}

/// The members of an audience.
#[derive(Debug)]
pub(crate) struct Audience {
    list_id: String,
    generated: u64,
    /// Added members and changed generated ones; `None` marks a deleted generated member.
    stored: BTreeMap<Pos, Option<Member>>,
    by_hash: HashMap<String, Pos>,
    /// Hashes of permanently deleted addresses, which Mailchimp refuses to take back.
    erased: HashSet<String>,
    next_added: u64,
}

impl Audience {
    pub fn new(list_id: &str) -> Audience {
        Audience {
            list_id: list_id.to_owned(),
            generated: 0,
            stored: BTreeMap::new(),
            by_hash: HashMap::new(),
            erased: HashSet::new(),
            next_added: 0,
        }
    }

    pub fn add_generated(&mut self, n: u64) {
        self.generated += n;
    }

    /// Where the member with this address is, whatever its status.
    pub fn find(&self, email: &str) -> Option<Pos> {
        if let Some(pos) = self.by_hash.get(&subscriber_hash(email)) {
            return Some(*pos);
        }
        let index = synthetic_index(email).filter(|&i| i < self.generated)?;
        let pos = Pos::Generated(index);
        // A stored entry means the generated member was changed: its address may be another.
        (!self.stored.contains_key(&pos)).then_some(pos)
    }

    /// The member whose subscriber hash is `hash`. Unchanged generated members are found by
    /// hashing their addresses one by one: slow for a huge audience, but only this
    /// single-member lookup pays for it.
    pub fn find_by_hash(&self, hash: &str) -> Option<Member> {
        if let Some(pos) = self.by_hash.get(hash) {
            return self.get(*pos);
        }
        let unchanged = |i: &u64| !self.stored.contains_key(&Pos::Generated(*i));
        (0..self.generated)
            .filter(unchanged)
            .find(|&i| subscriber_hash(&synthetic_email(i)) == hash)
            .and_then(|i| self.get(Pos::Generated(i)))
    }

    pub fn get(&self, pos: Pos) -> Option<Member> {
        match (self.stored.get(&pos), pos) {
            (Some(slot), _) => slot.clone(),
            (None, Pos::Generated(i)) if i < self.generated => {
                Some(synthetic_member(&self.list_id, i))
            }
            _ => None,
        }
    }

    /// Adds a member, refusing an address already present or permanently deleted.
    pub fn insert(&mut self, member: Member) -> Result<(), String> {
        let hash = member.id();
        if self.erased.contains(&hash) {
            return Err(format!(
                "{} was permanently deleted and cannot be re-imported",
                member.email_address
            ));
        }
        if self.find(&member.email_address).is_some() {
            return Err(format!("{} is already a list member", member.email_address));
        }
        let pos = Pos::Added(self.next_added);
        self.next_added += 1;
        self.by_hash.insert(hash, pos);
        self.stored.insert(pos, Some(member));
        Ok(())
    }

    /// Stores a changed member at its place, following a change of address.
    pub fn replace(&mut self, pos: Pos, member: Member) -> Result<(), String> {
        let hash = member.id();
        match self.find(&member.email_address) {
            Some(other) if other != pos => {
                return Err(format!("{} is already a list member", member.email_address));
            }
            _ if self.erased.contains(&hash) => {
                return Err(format!("{} was permanently deleted", member.email_address));
            }
            _ => {}
        }
        if let Some(before) = self.get(pos) {
            self.by_hash.remove(&before.id());
        }
        self.by_hash.insert(hash, pos);
        self.stored.insert(pos, Some(member));
        Ok(())
    }

    /// Deletes a member for good: it vanishes from every listing and cannot come back.
    pub fn erase(&mut self, pos: Pos) {
        if let Some(member) = self.remove(pos) {
            self.erased.insert(member.id());
        }
    }

    /// Removes a member from the audience; its address may be added again later.
    pub fn remove(&mut self, pos: Pos) -> Option<Member> {
        let member = self.get(pos);
        if let Some(member) = &member {
            self.by_hash.remove(&member.id());
        }
        match pos {
            Pos::Generated(_) => self.stored.insert(pos, None),
            Pos::Added(_) => self.stored.remove(&pos),
        };
        member
    }

    /// Every member, archived ones included, in the default order.
    pub fn all(&self) -> Vec<Member> {
        let generated = (0..self.generated).map(Pos::Generated);
        let added = self
            .stored
            .keys()
            .filter(|pos| matches!(pos, Pos::Added(_)));
        generated
            .chain(added.copied())
            .filter_map(|pos| self.get(pos))
            .collect()
    }

    /// How many members match.
    pub fn count(&self, filter: &Filter) -> u64 {
        let extras = self.stored_matches(filter).len() as u64;
        extras + GeneratedSet::new(self, filter).len()
    }

    /// One page of a listing, and how many members match in all.
    pub fn page(
        &self,
        filter: &Filter,
        order: Order,
        offset: u64,
        count: u64,
    ) -> (Vec<Member>, u64) {
        let mut extras = self.stored_matches(filter);
        if order != Order::Insertion {
            extras.sort_by_key(|(pos, member)| (member.last_changed, *pos));
        }
        let merged = Merge {
            generated: GeneratedSet::new(self, filter),
            extras,
            order,
        };
        let total = merged.total();
        let members = match order {
            Order::LastChanged { descending: true } => {
                let end = total.saturating_sub(offset);
                let start = end.saturating_sub(count);
                let mut page = merged.ascending(self, start, end - start);
                page.reverse();
                page
            }
            _ => merged.ascending(self, offset, count),
        };
        (members, total)
    }

    fn stored_matches<'a>(&'a self, filter: &Filter) -> Vec<(Pos, &'a Member)> {
        let kept = |(pos, slot): (&Pos, &'a Option<Member>)| {
            slot.as_ref()
                .filter(|member| filter.matches(member))
                .map(|member| (*pos, member))
        };
        self.stored.iter().filter_map(kept).collect()
    }
}

/// The generated members a filter keeps, described by arithmetic rather than listed: an
/// index range from the time window, the statuses' residues, and the "holes" left by
/// generated members that were changed (they are listed with the stored members).
struct GeneratedSet {
    lo: u64,
    hi: u64,
    residues: [bool; SYNTHETIC_STATUSES.len()],
    holes: Vec<u64>,
}

const PERIOD: u64 = SYNTHETIC_STATUSES.len() as u64;

impl GeneratedSet {
    fn new(audience: &Audience, filter: &Filter) -> GeneratedSet {
        let n = audience.generated;
        let lo = filter.since.map_or(0, |since| {
            first_index(n, |i| synthetic_last_changed(i) > since)
        });
        let hi = filter.before.map_or(n, |before| {
            first_index(n, |i| synthetic_last_changed(i) > before)
        });
        let hi = hi.max(lo);
        let residues = SYNTHETIC_STATUSES.map(|status| match &filter.status {
            Some(wanted) => wanted == status,
            None => status != "archived",
        });
        let changed = audience
            .stored
            .range(Pos::Generated(lo)..Pos::Generated(hi));
        let holes = changed
            .filter_map(|(pos, _)| match pos {
                Pos::Generated(i) if residues[(i % PERIOD) as usize] => Some(*i),
                _ => None,
            })
            .collect();
        GeneratedSet {
            lo,
            hi,
            residues,
            holes,
        }
    }

    /// Members of the set with an index below `x`.
    fn count_below(&self, x: u64) -> u64 {
        let x = x.clamp(self.lo, self.hi);
        let arithmetic: u64 = (0..PERIOD)
            .filter(|&r| self.residues[r as usize])
            .map(|r| below_with_residue(x, r) - below_with_residue(self.lo, r))
            .sum();
        arithmetic - self.holes.partition_point(|&h| h < x) as u64
    }

    fn len(&self) -> u64 {
        self.count_below(self.hi)
    }

    fn contains(&self, i: u64) -> bool {
        (self.lo..self.hi).contains(&i)
            && self.residues[(i % PERIOD) as usize]
            && self.holes.binary_search(&i).is_err()
    }

    /// The index of the `k`-th member of the set (from 0).
    fn nth(&self, k: u64) -> Option<u64> {
        if k >= self.len() {
            return None;
        }
        let span = self.hi - self.lo;
        Some(self.lo + first_index(span, |d| self.count_below(self.lo + d + 1) > k))
    }

    /// The member of the set that follows index `i`.
    fn next_after(&self, i: u64) -> Option<u64> {
        if self.count_below(i + 1) >= self.len() {
            return None;
        }
        (i + 1..self.hi).find(|&j| self.contains(j))
    }
}

/// Indexes below `x` that leave residue `r` modulo the status period.
fn below_with_residue(x: u64, r: u64) -> u64 {
    if x <= r { 0 } else { (x - r - 1) / PERIOD + 1 }
}

/// The first `i` in `0..n` for which `pred` holds, `pred` being false then true; `n` if none.
fn first_index(n: u64, pred: impl Fn(u64) -> bool) -> u64 {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) { hi = mid } else { lo = mid + 1 }
    }
    lo
}

/// Generated and stored members interleaved in one order.
struct Merge<'a> {
    generated: GeneratedSet,
    /// Sorted in `order` already.
    extras: Vec<(Pos, &'a Member)>,
    order: Order,
}

impl Merge<'_> {
    fn total(&self) -> u64 {
        self.extras.len() as u64 + self.generated.len()
    }

    /// Whether generated member `i` comes before stored member `extra`.
    fn generated_first(&self, i: u64, extra: &(Pos, &Member)) -> bool {
        let (pos, member) = extra;
        match self.order {
            Order::Insertion => Pos::Generated(i) < *pos,
            Order::LastChanged { .. } => {
                (synthetic_last_changed(i), Pos::Generated(i)) < (member.last_changed, *pos)
            }
        }
    }

    /// Where stored member `j` stands in the merged order.
    fn rank(&self, j: usize) -> u64 {
        let limit = self.generated.hi;
        let bound = first_index(limit, |i| !self.generated_first(i, &self.extras[j]));
        j as u64 + self.generated.count_below(bound)
    }

    /// Members `offset..offset + count` in ascending order.
    fn ascending(&self, audience: &Audience, offset: u64, count: u64) -> Vec<Member> {
        let mut j = first_index(self.extras.len() as u64, |j| {
            self.rank(j as usize) >= offset
        }) as usize;
        let mut next = self.generated.nth(offset.saturating_sub(j as u64));
        let mut page = Vec::new();
        while (page.len() as u64) < count {
            let take_generated = match (next, self.extras.get(j)) {
                (Some(i), Some(extra)) => self.generated_first(i, extra),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if let (true, Some(i)) = (take_generated, next) {
                page.push(synthetic_member(&audience.list_id, i));
                next = self.generated.next_after(i);
            } else {
                page.push(self.extras[j].1.clone());
                j += 1;
            }
        }
        page
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone, Utc};

    use super::{Audience, Filter, Order, Pos};
    use crate::fake_mailchimp::member::{Member, NewMember, synthetic_last_changed};

    /// An audience mixing unchanged, changed, archived and deleted generated members with
    /// added ones, some sharing `last_changed` seconds with generated members.
    fn mixed() -> Audience {
        let mut audience = Audience::new("l");
        audience.add_generated(60);
        let stamp = |i: u64| synthetic_last_changed(i);
        for (i, status) in [
            (3, "unsubscribed"),
            (17, "archived"),
            (40, "blocklisted"),
            (41, "cleaned"),
        ] {
            let mut member = audience.get(Pos::Generated(i)).expect("generated");
            member.status = status.to_owned();
            member.last_changed = stamp(i * 7 % 60);
            audience
                .replace(Pos::Generated(i), member)
                .expect("replace");
        }
        audience.erase(Pos::Generated(22));
        audience.erase(Pos::Generated(23));
        for k in 0..12u64 {
            let status = ["subscribed", "archived", "pending"][(k % 3) as usize];
            let at = if k % 2 == 0 {
                stamp(k * 5)
            } else {
                stamp(59) + Duration::seconds(k as i64)
            };
            let member = NewMember::new(&format!("added{k}@example.com"))
                .status(status)
                .into_member(at);
            audience.insert(member).expect("insert");
        }
        audience
    }

    /// The same listing done the slow, obvious way.
    fn naive(audience: &Audience, filter: &Filter, order: Order) -> Vec<Member> {
        let positions = (0..audience.generated)
            .map(Pos::Generated)
            .chain((0..audience.next_added).map(Pos::Added));
        let mut all: Vec<(Pos, Member)> = positions
            .filter_map(|pos| audience.get(pos).map(|member| (pos, member)))
            .filter(|(_, member)| filter.matches(member))
            .collect();
        if order != Order::Insertion {
            all.sort_by_key(|(pos, member)| (member.last_changed, *pos));
        }
        if order == (Order::LastChanged { descending: true }) {
            all.reverse();
        }
        all.into_iter().map(|(_, member)| member).collect()
    }

    fn filters() -> Vec<Filter> {
        let at = |i: u64| Some(synthetic_last_changed(i));
        let status = |s: &str| Some(s.to_owned());
        vec![
            Filter::default(),
            Filter {
                status: status("subscribed"),
                ..Filter::default()
            },
            Filter {
                status: status("archived"),
                ..Filter::default()
            },
            Filter {
                status: status("blocklisted"),
                ..Filter::default()
            },
            Filter {
                since: at(13),
                ..Filter::default()
            },
            Filter {
                since: at(8),
                before: at(44),
                status: status("pending"),
            },
            Filter {
                before: at(0),
                ..Filter::default()
            },
            Filter {
                since: Some(Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()),
                ..Filter::default()
            },
        ]
    }

    #[test]
    fn pages_match_a_naive_listing_for_every_filter_order_and_offset() {
        let audience = mixed();
        let orders = [
            Order::Insertion,
            Order::LastChanged { descending: false },
            Order::LastChanged { descending: true },
        ];
        for filter in filters() {
            for order in orders {
                let expected = naive(&audience, &filter, order);
                assert_eq!(audience.count(&filter), expected.len() as u64, "{filter:?}");
                for count in [1, 7, 100] {
                    for offset in 0..=expected.len() as u64 + 1 {
                        let (page, total) = audience.page(&filter, order, offset, count);
                        let want: Vec<&Member> = expected
                            .iter()
                            .skip(offset as usize)
                            .take(count as usize)
                            .collect();
                        let got: Vec<&Member> = page.iter().collect();
                        assert_eq!(
                            got, want,
                            "{filter:?} {order:?} offset {offset} count {count}"
                        );
                        assert_eq!(total, expected.len() as u64);
                    }
                }
            }
        }
    }

    #[test]
    fn a_page_deep_in_a_huge_audience_is_found_without_a_scan() {
        let mut audience = Audience::new("l");
        audience.add_generated(50_000_000);
        let started = std::time::Instant::now();
        let filter = Filter {
            status: Some("cleaned".to_owned()),
            since: Some(synthetic_last_changed(1_000_000)),
            before: None,
        };
        let (page, total) = audience.page(&filter, Order::Insertion, 4_000_000, 1000);
        assert_eq!(page.len(), 1000);
        assert!(total > 4_000_000);
        assert!(page.iter().all(|member| member.status == "cleaned"));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
