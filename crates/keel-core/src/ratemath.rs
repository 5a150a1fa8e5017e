//! The arithmetic of the four rate-limit algorithms, pure and unit-tested. The memory backend
//! runs these functions; the Redis backend's Lua scripts (`keel-redis/src/kv.rs`) are line-by-line
//! transcriptions of them, with `now` from Redis `TIME`. Time is microseconds since the epoch.
//!
//! A rejected request never changes the state: a client hammering a closed limit does not push
//! its own reset further away.

use crate::kv::RateOutcome;

const US_PER_MS: u64 = 1000;

fn ceil_ms(us: u64) -> u64 {
    us.div_ceil(US_PER_MS)
}

/// GCRA. `tat` is the stored theoretical arrival time (µs). Returns the outcome and, when
/// admitted, the new `tat` with how long to keep it (ms).
pub fn gcra(
    now: u64,
    tat: Option<u64>,
    limit: u64,
    period_ms: u64,
    burst: u64,
    cost: u64,
) -> (RateOutcome, Option<(u64, u64)>) {
    let interval = (period_ms * US_PER_MS / limit.max(1)).max(1);
    let tolerance = interval * burst.max(1);
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat + interval * cost;
    let allow_at = new_tat.saturating_sub(tolerance);
    if now < allow_at {
        let remaining = now.saturating_sub(tat.saturating_sub(tolerance)) / interval;
        let outcome = RateOutcome {
            allowed: false,
            remaining: remaining.min(burst),
            reset_after_ms: ceil_ms(tat - now),
            retry_after_ms: ceil_ms(allow_at - now).max(1),
        };
        return (outcome, None);
    }
    let remaining = (now - new_tat.saturating_sub(tolerance)) / interval;
    let keep_ms = ceil_ms(new_tat - now).max(1);
    let outcome = RateOutcome {
        allowed: true,
        remaining: remaining.min(burst),
        reset_after_ms: keep_ms,
        retry_after_ms: 0,
    };
    (outcome, Some((new_tat, keep_ms)))
}

/// The stored state of a windowed counter: the window index it was written in, that window's
/// count and (sliding window only) the previous window's count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowState {
    /// `floor(time / window)` of the window `count` belongs to.
    pub window: u64,
    /// Requests counted in that window.
    pub count: u64,
    /// Requests counted in the window before it.
    pub previous: u64,
}

/// Sliding window counter (two buckets). Returns the outcome and, when admitted, the state to
/// store with how long to keep it (ms).
pub fn sliding_window(
    now: u64,
    state: Option<WindowState>,
    limit: u64,
    window_ms: u64,
    cost: u64,
) -> (RateOutcome, Option<(WindowState, u64)>) {
    let w = (window_ms * US_PER_MS).max(1);
    let idx = now / w;
    let elapsed = now - idx * w;
    let (current, previous) = match state {
        Some(s) if s.window == idx => (s.count, s.previous),
        Some(s) if s.window + 1 == idx => (0, s.count),
        _ => (0, 0),
    };
    // Weighted previous count, rounded down to whole requests (in µs-units of precision).
    let weighted_prev = ((previous as u128 * (w - elapsed) as u128) / w as u128) as u64;
    let estimate = weighted_prev + current;
    let until_window_end = ceil_ms(w - elapsed).max(1);
    if estimate + cost > limit {
        // Earliest time the weighted previous count has decayed enough, within this window;
        // otherwise the start of the next one.
        let retry_us = if current + cost <= limit && previous > 0 {
            let allowed_prev = limit - current - cost; // need prev * (w - e') / w <= allowed_prev
            let e_needed = w - (allowed_prev as u128 * w as u128 / previous as u128) as u64;
            e_needed.saturating_sub(elapsed).max(1)
        } else {
            w - elapsed
        };
        let outcome = RateOutcome {
            allowed: false,
            remaining: limit.saturating_sub(estimate),
            reset_after_ms: until_window_end,
            retry_after_ms: ceil_ms(retry_us).max(1),
        };
        return (outcome, None);
    }
    let next = WindowState {
        window: idx,
        count: current + cost,
        previous,
    };
    let outcome = RateOutcome {
        allowed: true,
        remaining: limit - estimate - cost,
        reset_after_ms: until_window_end,
        retry_after_ms: 0,
    };
    // Kept for the rest of this window and the whole next one (where it is "previous").
    (outcome, Some((next, ceil_ms(w - elapsed + w))))
}

/// Fixed window aligned to the epoch. Returns the outcome and, when admitted, the state to
/// store with how long to keep it (ms).
pub fn fixed_window(
    now: u64,
    state: Option<WindowState>,
    limit: u64,
    window_ms: u64,
    cost: u64,
) -> (RateOutcome, Option<(WindowState, u64)>) {
    let w = (window_ms * US_PER_MS).max(1);
    let idx = now / w;
    let until_end = ceil_ms(w - (now - idx * w)).max(1);
    let count = match state {
        Some(s) if s.window == idx => s.count,
        _ => 0,
    };
    if count + cost > limit {
        let outcome = RateOutcome {
            allowed: false,
            remaining: limit.saturating_sub(count),
            reset_after_ms: until_end,
            retry_after_ms: until_end,
        };
        return (outcome, None);
    }
    let next = WindowState {
        window: idx,
        count: count + cost,
        previous: 0,
    };
    let outcome = RateOutcome {
        allowed: true,
        remaining: limit - count - cost,
        reset_after_ms: until_end,
        retry_after_ms: 0,
    };
    (outcome, Some((next, until_end)))
}

/// Sliding log. `log` holds the admission times (µs) still inside the window after pruning,
/// ascending. Returns the outcome and whether to append `cost` entries at `now`.
pub fn sliding_log(now: u64, log: &[u64], limit: u64, window_ms: u64, cost: u64) -> RateOutcome {
    let w = window_ms * US_PER_MS;
    let count = log.len() as u64;
    if count + cost > limit {
        // The request fits once the oldest `count + cost - limit` entries have left the window.
        let retry_us = if cost > limit {
            w
        } else {
            let idx = (count + cost - limit - 1) as usize;
            (log[idx] + w).saturating_sub(now)
        };
        let reset_us = log
            .last()
            .map(|&t| (t + w).saturating_sub(now))
            .unwrap_or(0);
        return RateOutcome {
            allowed: false,
            remaining: limit.saturating_sub(count),
            reset_after_ms: ceil_ms(reset_us).max(1),
            retry_after_ms: ceil_ms(retry_us).max(1),
        };
    }
    RateOutcome {
        allowed: true,
        remaining: limit - count - cost,
        reset_after_ms: window_ms.max(1),
        retry_after_ms: 0,
    }
}

/// The oldest admission time still inside the window at `now` (entries at or before this are
/// pruned).
pub fn sliding_log_cutoff(now: u64, window_ms: u64) -> u64 {
    now.saturating_sub(window_ms * US_PER_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000; // one second in µs
    const T0: u64 = 1_700_000_000 * S;

    #[test]
    fn gcra_admits_the_burst_then_one_per_interval() {
        // 10 per 10 s, burst 10: 10 at once, then one per second.
        let mut tat = None;
        for i in 0..10 {
            let (o, next) = gcra(T0, tat, 10, 10_000, 10, 1);
            assert!(o.allowed, "request {i}");
            assert_eq!(o.remaining, 9 - i);
            tat = next.map(|n| n.0);
        }
        let (o, next) = gcra(T0, tat, 10, 10_000, 10, 1);
        assert!(!o.allowed);
        assert!(next.is_none());
        assert_eq!(o.retry_after_ms, 1000);
        assert_eq!(o.reset_after_ms, 10_000);
        // 999 ms later: still closed; 1 s later: exactly one more.
        assert!(!gcra(T0 + 999_000, tat, 10, 10_000, 10, 1).0.allowed);
        let (o, next) = gcra(T0 + S, tat, 10, 10_000, 10, 1);
        assert!(o.allowed);
        assert_eq!(o.remaining, 0);
        assert!(!gcra(T0 + S, next.map(|n| n.0), 10, 10_000, 10, 1).0.allowed);
    }

    #[test]
    fn gcra_burst_smaller_than_limit_and_cost() {
        // 60/min with a burst of 5: five at once.
        let mut tat = None;
        let mut admitted = 0;
        for _ in 0..20 {
            let (o, next) = gcra(T0, tat, 60, 60_000, 5, 1);
            if o.allowed {
                admitted += 1;
                tat = next.map(|n| n.0);
            }
        }
        assert_eq!(admitted, 5);
        // A cost of 3 against a fresh burst of 5 leaves 2.
        let (o, _) = gcra(T0, None, 60, 60_000, 5, 3);
        assert!(o.allowed);
        assert_eq!(o.remaining, 2);
        // A cost larger than the burst is never admitted.
        assert!(!gcra(T0, None, 60, 60_000, 5, 6).0.allowed);
    }

    #[test]
    fn gcra_recovers_fully_after_the_period() {
        let mut tat = None;
        for _ in 0..10 {
            tat = gcra(T0, tat, 10, 10_000, 10, 1).1.map(|n| n.0);
        }
        let (o, _) = gcra(T0 + 10 * S, tat, 10, 10_000, 10, 1);
        assert!(o.allowed);
        assert_eq!(o.remaining, 9);
    }

    #[test]
    fn fixed_window_counts_and_resets_at_the_boundary() {
        let w = 60_000; // 1 min
        let start = (T0 / (60 * S)) * 60 * S; // aligned
        let mut st = None;
        for i in 0..3 {
            let (o, next) = fixed_window(start + 10 * S, st, 3, w, 1);
            assert!(o.allowed);
            assert_eq!(o.remaining, 2 - i);
            assert_eq!(o.reset_after_ms, 50_000);
            st = next.map(|n| n.0);
        }
        let (o, next) = fixed_window(start + 10 * S, st, 3, w, 1);
        assert!(!o.allowed);
        assert!(next.is_none());
        assert_eq!(o.retry_after_ms, 50_000);
        let (o, _) = fixed_window(start + 60 * S, st, 3, w, 1);
        assert!(o.allowed, "a new window starts empty");
        assert_eq!(o.remaining, 2);
    }

    #[test]
    fn fixed_window_of_a_day_is_a_utc_day() {
        let day = 86_400_000;
        // 2024-01-15 23:59:59 UTC → 1 s left in the window.
        let now = 1_705_363_199 * S;
        let (o, _) = fixed_window(now, None, 50, day, 1);
        assert_eq!(o.reset_after_ms, 1000);
    }

    #[test]
    fn sliding_window_weights_the_previous_window() {
        let w = 60_000;
        let start = (T0 / (60 * S)) * 60 * S;
        // Previous window had 10 (the limit); a quarter into the new one, 7.5 → 7 still count.
        let prev = WindowState {
            window: start / (60 * S) - 1,
            count: 10,
            previous: 0,
        };
        let now = start + 15 * S;
        let (o, next) = sliding_window(now, Some(prev), 10, w, 1);
        assert!(o.allowed);
        assert_eq!(o.remaining, 2);
        let mut st = next.map(|n| n.0);
        let mut admitted = 1;
        while let (o, Some((n, _))) = sliding_window(now, st, 10, w, 1) {
            assert!(o.allowed);
            st = Some(n);
            admitted += 1;
        }
        assert_eq!(admitted, 3);
        let (o, _) = sliding_window(now, st, 10, w, 1);
        assert!(!o.allowed);
        // current 3, prev 10: fits again once 10*(60-e)/60 <= 6, i.e. e >= 24 s → 9 s from now.
        assert_eq!(o.retry_after_ms, 9_000);
        assert!(sliding_window(now + 9 * S, st, 10, w, 1).0.allowed);
    }

    #[test]
    fn sliding_window_admits_exactly_the_limit_in_a_fresh_window() {
        let mut st = None;
        let mut admitted = 0;
        for _ in 0..25 {
            let (o, next) = sliding_window(T0, st, 20, 3_600_000, 1);
            if let Some((n, ttl)) = next {
                assert!(ttl > 3_600_000);
                st = Some(n);
            }
            admitted += o.allowed as u32;
        }
        assert_eq!(admitted, 20);
    }

    #[test]
    fn sliding_log_is_exact_and_reports_when_the_oldest_leaves() {
        let w = 10_000;
        let log = [T0, T0 + S, T0 + 2 * S];
        let o = sliding_log(T0 + 3 * S, &log, 3, w, 1);
        assert!(!o.allowed);
        assert_eq!(
            o.retry_after_ms, 7_000,
            "the first entry leaves at T0 + 10 s"
        );
        assert_eq!(o.remaining, 0);
        let o = sliding_log(T0 + 3 * S, &log[1..], 3, w, 1);
        assert!(o.allowed);
        assert_eq!(o.remaining, 0);
        // cost 2 with one slot free: needs the oldest entry gone.
        let o = sliding_log(T0 + 3 * S, &log[1..], 3, w, 2);
        assert!(!o.allowed);
        assert_eq!(o.retry_after_ms, 8_000);
        assert_eq!(sliding_log_cutoff(T0 + 10 * S, w), T0);
    }
}
