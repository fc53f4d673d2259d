//! Audit: a whole day (or an export file) checked at once for duplicate slots and
//! tokens, as the nightly audit, `slotguard audit` and the weekly report see it.
//! [`counts`] says what the three numbers every audit reports mean.

pub mod counts;
pub mod file;
pub mod scan;
pub mod skim;
