//! Topic names double as directory names, so they are restricted to what is
//! safe in a path on every filesystem (Kafka's rule): no separators, no `.`
//! or `..`, bounded length.

/// The longest topic name: leaves room for `-<partition>` in a 255-byte file name.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(format!("topic name must be 1 to {TOPIC_NAME_BYTES_MAX} bytes, got {}", name.len()));
    }
    if name == "." || name == ".." {
        return Err(format!("topic name cannot be {name:?}"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("topic name {name:?} contains {c:?}; use a-z, A-Z, 0-9, '.', '_' and '-'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_like_names_are_refused() {
        for bad in ["", ".", "..", "a/b", "a b", "ü", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["orders", "orders.v2", "a_b-c", &"x".repeat(249)] {
            assert!(validate_topic_name(good).is_ok(), "{good:?} refused");
        }
    }
}
