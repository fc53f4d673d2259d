//! Token numbering, exactly as Kloqo prints it on the queue screen.
//! Advance: `numericToken = slotIndex + 1`, `A{session+1}-{numericToken:03}`.
//! Walk-in: `numericToken = 100 + n` with n from a per-session counter that never goes
//! back, `W{session+1}-{numericToken:03}`.

use super::SlotIndex;

/// First walk-in number of a session minus one: walk-in n is token 100 + n.
pub const WALK_IN_BASE: u32 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub numeric: u32,
    pub number: String,
}

impl Token {
    pub fn advance(slot: SlotIndex) -> Self {
        let numeric = slot.value() + 1;
        Self {
            numeric,
            number: format!("A{}-{numeric:03}", slot.session() + 1),
        }
    }

    /// The `n`-th walk-in (n ≥ 1) of session `session`.
    pub fn walk_in(session: u32, n: u32) -> Self {
        let numeric = WALK_IN_BASE + n;
        Self {
            numeric,
            number: format!("W{}-{numeric:03}", session + 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tokens_match_the_spec_examples() {
        assert_eq!(
            Token::advance(SlotIndex::from_parts(0, 10)).number,
            "A1-011"
        );
        assert_eq!(
            Token::advance(SlotIndex::from_parts(1, 5)).number,
            "A2-1006"
        );
        assert_eq!(
            Token::advance(SlotIndex::from_parts(0, 5)),
            Token {
                numeric: 6,
                number: "A1-006".into()
            }
        );
        assert_eq!(Token::walk_in(0, 1).number, "W1-101");
    }

    proptest! {
        #[test]
        fn advance_tokens_are_distinct_per_slot_and_never_look_like_walk_ins(a in 0u32..12_000, b in 0u32..12_000) {
            let (a, b) = (SlotIndex::from_parts(a / 1000, a % 1000), SlotIndex::from_parts(b / 1000, b % 1000));
            let (ta, tb) = (Token::advance(a), Token::advance(b));
            prop_assert_eq!(ta == tb, a == b);
            prop_assert!(ta.number.starts_with('A'));
            let digits = ta.number.split('-').nth(1).unwrap();
            prop_assert!(digits.len() >= 3);
            prop_assert_eq!(digits.parse::<u32>().unwrap(), ta.numeric);
        }

        #[test]
        fn walk_in_tokens_are_distinct_per_session_and_number(s in 0u32..12, n in 1u32..5000, m in 1u32..5000) {
            prop_assert_eq!(Token::walk_in(s, n) == Token::walk_in(s, m), n == m);
            prop_assert_ne!(Token::walk_in(s, n).number, Token::walk_in(s + 1, n).number);
        }
    }
}
