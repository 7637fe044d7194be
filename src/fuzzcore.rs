//! Placeholder: the fuzzing core is being written.
