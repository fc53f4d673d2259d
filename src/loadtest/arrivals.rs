//! When requests are due in the open model: phases of `duration` seconds at
//! `arrivalRate` per second, ramping linearly to `rampTo` when given, as artillery and
//! k6's arrival-rate executors do. Pure: a schedule of offsets from the start.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Phase {
    /// Seconds.
    pub duration: f64,
    /// Arrivals per second at the start of the phase.
    pub arrival_rate: f64,
    /// Arrivals per second at its end, ramping linearly; the same rate when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp_to: Option<f64>,
}

impl Phase {
    pub fn check(&self) -> Result<(), String> {
        let rate_ok = |r: f64| r.is_finite() && r >= 0.0;
        let rates_ok = rate_ok(self.arrival_rate) && self.ramp_to.is_none_or(rate_ok);
        let duration_ok = self.duration.is_finite() && self.duration > 0.0;
        if duration_ok && rates_ok {
            Ok(())
        } else {
            Err("a phase needs a positive duration and non-negative rates".into())
        }
    }

    /// Arrivals expected in the phase: the integral of the rate.
    pub fn expected_arrivals(&self) -> f64 {
        let end = self.ramp_to.unwrap_or(self.arrival_rate);
        (self.arrival_rate + end) / 2.0 * self.duration
    }

    /// Offset of the k-th arrival (k from 0) inside the phase: the time t at which
    /// the cumulative count `a·t + (b−a)·t²/(2d)` reaches k.
    fn offset_of(&self, k: f64) -> f64 {
        let (a, d) = (self.arrival_rate, self.duration);
        let slope = (self.ramp_to.unwrap_or(a) - a) / d;
        if slope.abs() < 1e-12 {
            return k / a;
        }
        // slope/2 · t² + a·t − k = 0, the root in [0, d].
        (-a + (a * a + 2.0 * slope * k).sqrt()) / slope
    }
}

/// Every arrival's offset from the start of the run, phase after phase.
pub fn schedule(phases: &[Phase]) -> Vec<Duration> {
    let mut offsets = Vec::new();
    let mut phase_start = 0.0;
    for phase in phases {
        let count = phase.expected_arrivals().round() as u64;
        offsets.extend(
            (0..count)
                .map(|k| phase.offset_of(k as f64))
                .filter(|t| t.is_finite() && *t < phase.duration)
                .map(|t| Duration::from_secs_f64(phase_start + t)),
        );
        phase_start += phase.duration;
    }
    offsets
}

/// Every arrival's offset as artillery 2 spaces them on one worker, so a script gets
/// the same number of virtual users from both tools. A steady phase sends one every
/// ⌊10⁶/rate⌋ µs from one interval in, ⌊duration/interval⌋ of them, and the next phase
/// starts at its last arrival; a ramp goes second by second, sending in second `i` the
/// rate `arrivalRate + (rampTo − arrivalRate)·i/(duration − 1)` rounded half up,
/// spaced ⌊1000/n⌋ ms apart.
pub fn artillery_schedule(phases: &[Phase]) -> Vec<Duration> {
    let mut offsets = Vec::new();
    let mut start_us: u64 = 0;
    for phase in phases {
        let (rate, duration_us) = (phase.arrival_rate, (phase.duration * 1e6) as u64);
        match phase.ramp_to {
            None if rate <= 0.0 => start_us += duration_us,
            None => {
                let tick = ((1e6 / rate).floor() as u64).max(1);
                let count = duration_us / tick;
                offsets.extend((1..=count).map(|k| Duration::from_micros(start_us + k * tick)));
                start_us += count * tick;
            }
            Some(ramp_to) => {
                let periods = phase.duration.ceil() as u64;
                for i in 0..periods {
                    let raw = if periods == 1 {
                        (ramp_to + rate) / 2.0
                    } else {
                        (ramp_to - rate) / (phase.duration - 1.0) * i as f64 + rate
                    };
                    let n = (raw.floor() + if raw.fract() >= 0.5 { 1.0 } else { 0.0 }) as u64;
                    let tick_ms = 1000u64.checked_div(n).unwrap_or(1000);
                    let second = start_us + i * 1_000_000;
                    offsets.extend(
                        (1..=n).map(|j| Duration::from_micros(second + j * tick_ms * 1000)),
                    );
                }
                start_us += periods * 1_000_000;
            }
        }
    }
    offsets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(duration: f64, rate: f64, ramp_to: Option<f64>) -> Phase {
        Phase {
            duration,
            arrival_rate: rate,
            ramp_to,
        }
    }

    #[test]
    fn ten_a_second_for_sixty_seconds_is_six_hundred_evenly_spaced_arrivals() {
        let s = schedule(&[phase(60.0, 10.0, None)]);
        assert_eq!(s.len(), 600);
        assert_eq!(s[1] - s[0], Duration::from_millis(100));
        assert!(*s.last().unwrap() < Duration::from_secs(60));
    }

    #[test]
    fn a_ramp_from_zero_to_twenty_packs_arrivals_towards_its_end() {
        let s = schedule(&[phase(10.0, 0.0, Some(20.0))]);
        assert_eq!(s.len(), 100);
        let first_half = s.iter().filter(|t| **t < Duration::from_secs(5)).count();
        assert_eq!(
            first_half, 25,
            "a quarter of a linear ramp's area lies in its first half"
        );
        assert!(s.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn phases_follow_each_other() {
        let s = schedule(&[phase(2.0, 5.0, None), phase(1.0, 10.0, None)]);
        assert_eq!(s.len(), 20);
        assert!(s[10] >= Duration::from_secs(2));
    }

    #[test]
    fn artillery_counts_arrivals_as_artillery_does() {
        let steady = artillery_schedule(&[phase(60.0, 10.0, None)]);
        assert_eq!(steady.len(), 600);
        assert_eq!(steady[0], Duration::from_millis(100));
        assert_eq!(*steady.last().unwrap(), Duration::from_secs(60));
        // 1, 1.44, 1.89, … 5 a second, rounded half up.
        let ramp = artillery_schedule(&[phase(10.0, 1.0, Some(5.0))]);
        assert_eq!(ramp.len(), 1 + 1 + 2 + 2 + 3 + 3 + 4 + 4 + 5 + 5);
        assert!(ramp.windows(2).all(|w| w[0] <= w[1]));
        // A rate of 3 for 2 s: ⌊2e6 / 333333⌋ = 6, the next phase from the last.
        let both = artillery_schedule(&[phase(2.0, 3.0, None), phase(1.0, 2.0, None)]);
        assert_eq!(both.len(), 8);
        assert_eq!(both[6], Duration::from_micros(6 * 333_333 + 500_000));
        assert_eq!(
            artillery_schedule(&[phase(5.0, 0.0, None), phase(1.0, 1.0, None)])[0],
            Duration::from_secs(6)
        );
    }

    #[test]
    fn nonsense_phases_are_refused() {
        assert!(phase(0.0, 1.0, None).check().is_err());
        assert!(phase(1.0, -1.0, None).check().is_err());
        assert!(phase(f64::INFINITY, 1.0, None).check().is_err());
    }
}
