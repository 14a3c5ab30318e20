//! The p2p workload as a pure function of a message's global index, so every worker
//! process knows the whole schedule without talking to the others.
//!
//! Message `i` of a run is due at `t0 + i / rate` (open loop: sends follow the clock,
//! never the answers), goes to user `i mod U`, comes from another user chosen by a hash
//! of `i`, and is sent from one of that user's devices. The `j`-th message addressed to
//! a user has `i = r + j·U`, so a receiver tracks what it got in a dense bitset indexed
//! by `j`. Each message carries `run:i:due_us:` at the start of its text, padded to the
//! payload size; `due_us` is on the machine-wide monotonic clock ([`mono_us`]), which
//! every process on this machine shares, so a receiver in another process measures
//! send→delivered from the *scheduled* time. This module does no IO.
//!
//! The `group` scenario uses the same schedule with `members = M > 0`: users are cut
//! into `U / M` groups of M consecutive users (group `g` holds users `g·M .. g·M+M`),
//! message `i` goes to group `i mod (U / M)` from a hashed member of it, and every
//! other member receives it (the sender's own devices get echoes, counted apart). The
//! "recipient" of a message is then a group, and a member's bitset is its group's.

/// Microseconds on `CLOCK_MONOTONIC`: one clock for every process on this machine,
/// unaffected by wall-clock steps.
pub fn mono_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000).saturating_add(ts.tv_nsec as u64 / 1_000)
}

/// Wall-clock milliseconds since the Unix epoch (for `client_time_ms`, informational).
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The smallest payload that holds the stamp of any message.
pub const MIN_PAYLOAD: usize = 48;

/// One run's schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub users: u32,
    pub devices: u32,
    /// Messages per second, all senders together.
    pub rate: f64,
    /// Messages in the run.
    pub count: u64,
    /// When message 0 is due ([`mono_us`]).
    pub t0_us: u64,
    /// Group size for the `group` scenario; 0 = 1:1 messages.
    pub members: u32,
}

impl Schedule {
    /// When message `i` is due.
    pub fn due_us(&self, i: u64) -> u64 {
        self.t0_us + (i as f64 * 1e6 / self.rate) as u64
    }

    /// Recipients: users (1:1) or groups.
    pub fn units(&self) -> u32 {
        self.users.checked_div(self.members).map_or(self.users, |g| g.max(1))
    }

    /// The recipient whose messages user `u` receives: itself (1:1) or its group.
    pub fn unit_of(&self, u: u32) -> u32 {
        u.checked_div(self.members).unwrap_or(u)
    }

    /// Whether user `u` is to receive message `i` (a group's sender does not).
    pub fn receives(&self, u: u32, i: u64) -> bool {
        i < self.count && self.recipient(i) == self.unit_of(u) && (self.members == 0 || self.sender(i) != u)
    }

    /// The receiving user (1:1) or group of message `i`.
    pub fn recipient(&self, i: u64) -> u32 {
        (i % u64::from(self.units())) as u32
    }

    /// The sending user of message `i`: any user but the recipient, spread by a hash;
    /// in a group, any member.
    pub fn sender(&self, i: u64) -> u32 {
        if self.members > 0 {
            let g = u64::from(self.recipient(i));
            let m = u64::from(self.members);
            return (g * m + mix(i) % m) as u32;
        }
        let users = u64::from(self.users);
        let r = i % users;
        let off = 1 + mix(i) % (users - 1).max(1);
        ((r + off) % users) as u32
    }

    /// Which of the sender's devices sends message `i`.
    pub fn sender_device(&self, i: u64) -> u32 {
        ((mix(i) >> 32) % u64::from(self.devices.max(1))) as u32
    }

    /// Index of message `i` in its recipient's bitset.
    pub fn slot(&self, i: u64) -> u64 {
        i / u64::from(self.units())
    }

    /// How many messages of the run go to user `r` (the size of its bitset).
    pub fn slots_for(&self, r: u32) -> u64 {
        let users = u64::from(self.units());
        self.count / users + u64::from(u64::from(r) < self.count % users)
    }

    /// The global index of the `slot`-th message to user `r`.
    pub fn index_of(&self, r: u32, slot: u64) -> u64 {
        u64::from(r) + slot * u64::from(self.units())
    }
}

/// splitmix64: a cheap, well-spread hash of the index.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What a message's text says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub run: u32,
    pub index: u64,
    pub due_us: u64,
}

/// The text of a message: its stamp, padded with `x` to `size` bytes (or longer, if
/// the stamp needs more).
pub fn encode_payload(stamp: Stamp, size: usize) -> String {
    let mut s = format!("{}:{}:{}:", stamp.run, stamp.index, stamp.due_us);
    if s.len() < size {
        s.extend(std::iter::repeat_n('x', size - s.len()));
    }
    s
}

/// Reads a stamp back; `None` for text this harness did not write.
pub fn parse_payload(text: &[u8]) -> Option<Stamp> {
    let mut parts = text.splitn(4, |b| *b == b':');
    let mut num = || -> Option<u64> { std::str::from_utf8(parts.next()?).ok()?.parse().ok() };
    let run = u32::try_from(num()?).ok()?;
    let index = num()?;
    let due_us = num()?;
    Some(Stamp { run, index, due_us })
}

/// A fixed-size set of small integers: which messages a device received.
#[derive(Debug, Clone, Default)]
pub struct Bits {
    words: Vec<u64>,
    len: u64,
    ones: u64,
}

impl Bits {
    pub fn new(len: u64) -> Self {
        Bits { words: vec![0; len.div_ceil(64) as usize], len, ones: 0 }
    }

    /// Sets bit `j`; `Some(true)` if it was new, `Some(false)` if already set, `None`
    /// if `j` is out of range.
    pub fn insert(&mut self, j: u64) -> Option<bool> {
        if j >= self.len {
            return None;
        }
        let (w, b) = ((j / 64) as usize, j % 64);
        let word = self.words.get_mut(w)?;
        let new = *word & (1 << b) == 0;
        *word |= 1 << b;
        self.ones += u64::from(new);
        Some(new)
    }

    pub fn contains(&self, j: u64) -> bool {
        j < self.len && self.words.get((j / 64) as usize).is_some_and(|w| w & (1 << (j % 64)) != 0)
    }

    /// Number of bits set.
    pub fn ones(&self) -> u64 {
        self.ones
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(users: u32, devices: u32, count: u64) -> Schedule {
        Schedule { users, devices, rate: 1000.0, count, t0_us: 5_000_000, members: 0 }
    }

    #[test]
    fn group_messages_come_from_a_member_and_reach_the_others() {
        // 4 groups of 5.
        let s = Schedule { members: 5, ..sched(20, 1, 4_000) };
        assert_eq!(s.units(), 4);
        let mut per_group = [0u64; 4];
        for i in 0..s.count {
            let g = s.recipient(i);
            per_group[g as usize] += 1;
            let from = s.sender(i);
            assert_eq!(s.unit_of(from), g, "message {i} from outside its group");
            assert!(!s.receives(from, i), "the sender receives its own message {i}");
            let receivers = (0..20).filter(|&u| s.receives(u, i)).count();
            assert_eq!(receivers, 4, "message {i}");
            assert_eq!(s.index_of(g, s.slot(i)), i);
        }
        assert_eq!(per_group, [1_000; 4]);
        assert_eq!((0..4).map(|g| s.slots_for(g)).sum::<u64>(), s.count);
    }

    #[test]
    fn due_times_follow_the_rate() {
        let s = sched(10, 2, 100);
        assert_eq!(s.due_us(0), 5_000_000);
        assert_eq!(s.due_us(1), 5_001_000);
        assert_eq!(s.due_us(1000), 6_000_000);
    }

    #[test]
    fn never_sends_to_self_and_spreads_over_senders_and_devices() {
        let s = sched(7, 3, 70_000);
        let mut per_sender = [0u32; 7];
        let mut per_device = [0u32; 3];
        for i in 0..s.count {
            assert_ne!(s.sender(i), s.recipient(i), "message {i}");
            per_sender[s.sender(i) as usize] += 1;
            per_device[s.sender_device(i) as usize] += 1;
        }
        for n in per_sender {
            assert!((9_000..11_000).contains(&n), "{per_sender:?}");
        }
        for n in per_device {
            assert!((22_000..24_700).contains(&n), "{per_device:?}");
        }
    }

    #[test]
    fn two_users_talk_to_each_other() {
        let s = sched(2, 1, 10);
        for i in 0..10 {
            assert_eq!(s.sender(i), 1 - s.recipient(i));
        }
    }

    #[test]
    fn slots_cover_every_message_exactly_once() {
        let s = sched(7, 1, penultimate());
        let mut total = 0;
        for r in 0..7 {
            let n = s.slots_for(r);
            total += n;
            for j in 0..n {
                let i = s.index_of(r, j);
                assert!(i < s.count);
                assert_eq!((s.recipient(i), s.slot(i)), (r, j));
            }
        }
        assert_eq!(total, s.count);
    }

    fn penultimate() -> u64 {
        7 * 13 + 5
    }

    #[test]
    fn payload_round_trip_and_padding() {
        let st = Stamp { run: 3, index: 123_456_789, due_us: 987_654_321_000 };
        let p = encode_payload(st, 100);
        assert_eq!(p.len(), 100);
        assert_eq!(parse_payload(p.as_bytes()), Some(st));
        let short = encode_payload(st, 4);
        assert!(short.len() > 4 && short.len() <= MIN_PAYLOAD);
        assert_eq!(parse_payload(short.as_bytes()), Some(st));
        for bad in ["", "hello", "1:2", "a:b:c:", "99999999999:1:2:"] {
            assert_eq!(parse_payload(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn bits_count_new_and_repeated() {
        let mut b = Bits::new(130);
        assert_eq!(b.insert(0), Some(true));
        assert_eq!(b.insert(129), Some(true));
        assert_eq!(b.insert(129), Some(false));
        assert_eq!(b.insert(130), None);
        assert_eq!(b.ones(), 2);
        assert!(b.contains(129) && !b.contains(64));
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = mono_us();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(mono_us() >= a + 1_000);
    }
}
