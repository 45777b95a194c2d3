//! Virtual time (TM): a function of retired instructions, never of the wall
//! clock, so the same image and input give the same run (DESIGN.md section 3).

/// The virtual clock.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clock {
    /// Instructions retired since the machine was built.
    pub icount: u64,
    /// Virtual nanoseconds each instruction advances the clock by.
    pub ns_per_insn: u64,
    /// Virtual nanoseconds added by halts that skipped ahead in time.
    pub idle_ns: u64,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            icount: 0,
            ns_per_insn: 1,
            idle_ns: 0,
        }
    }
}

impl Clock {
    /// Virtual time now, in nanoseconds.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.icount
            .wrapping_mul(self.ns_per_insn)
            .wrapping_add(self.idle_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_advances_with_retired_instructions_only() {
        let mut c = Clock {
            ns_per_insn: 3,
            ..Clock::default()
        };
        assert_eq!(c.now_ns(), 0);
        c.icount = 10;
        assert_eq!(c.now_ns(), 30);
    }
}
