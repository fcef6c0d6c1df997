//! Topics and topic patterns (host ABI §8.1) and the one matcher (§8.2)
//! used for ACLs, subscriptions and interceptor bindings.

pub const MAX_TOPIC_BYTES: usize = 256;
pub const MAX_SEGMENTS: usize = 8;

/// Why a topic or pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("is empty")]
    Empty,
    #[error("is longer than 256 bytes")]
    TooLong,
    #[error("has more than 8 segments")]
    TooManySegments,
    #[error("has an empty segment")]
    EmptySegment,
    #[error("contains whitespace or a control character")]
    BadCharacter,
    #[error("uses `*` other than as a whole segment")]
    Wildcard,
}

fn validate(text: &str, pattern: bool) -> Result<(), TopicError> {
    if text.is_empty() {
        return Err(TopicError::Empty);
    }
    if text.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong);
    }
    let mut count = 0;
    for segment in text.split('.') {
        count += 1;
        if count > MAX_SEGMENTS {
            return Err(TopicError::TooManySegments);
        }
        if segment.is_empty() {
            return Err(TopicError::EmptySegment);
        }
        if segment.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(TopicError::BadCharacter);
        }
        if segment.contains('*') && !(pattern && segment == "*") {
            return Err(TopicError::Wildcard);
        }
    }
    Ok(())
}

/// A concrete topic, as published: no `*` at all.
pub fn validate_topic(topic: &str) -> Result<(), TopicError> {
    validate(topic, false)
}

/// A pattern: like a topic, but a segment may be exactly `*`.
pub fn validate_pattern(pattern: &str) -> Result<(), TopicError> {
    validate(pattern, true)
}

/// The matcher of §8.2: a non-final `*` matches one segment, a final `*`
/// matches one or more remaining segments, other segments match themselves.
pub fn matches(pattern: &str, topic: &str) -> bool {
    // Most manifest patterns are literal or end in `.*`; both reduce to a
    // string comparison, which is what every publish pays per binding, ACL
    // entry and subscription.
    if pattern == "*" {
        return true;
    }
    // A plain byte scan: patterns are short, and `str::find`'s searcher
    // costs more to set up than the scan itself.
    match pattern.bytes().position(|b| b == b'*') {
        None => return pattern == topic,
        // The first `*` is the last character, right after a dot: the
        // prefix before that dot is literal.
        Some(star)
            if star + 1 == pattern.len() && star > 0 && pattern.as_bytes()[star - 1] == b'.' =>
        {
            let prefix = &pattern[..star - 1];
            return topic.len() > prefix.len()
                && topic.starts_with(prefix)
                && topic.as_bytes()[prefix.len()] == b'.';
        }
        Some(_) => {}
    }
    matches_by_segment(pattern, topic)
}

/// The matcher spelled out segment by segment: the reference the shortcuts
/// in [`matches`] agree with, and the path for a `*` in the middle.
fn matches_by_segment(pattern: &str, topic: &str) -> bool {
    let mut pat = pattern.split('.').peekable();
    let mut top = topic.split('.');
    while let Some(p) = pat.next() {
        let last = pat.peek().is_none();
        match top.next() {
            None => return false,
            Some(t) => {
                if p == "*" {
                    if last {
                        return true;
                    }
                } else if p != t {
                    return false;
                }
            }
        }
    }
    top.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortcuts_agree_with_the_segment_matcher() {
        // Every pattern and topic over a small alphabet, valid or not.
        let parts = ["", "a", "b", "*", "ab", "a*"];
        let mut texts = Vec::new();
        for x in parts {
            texts.push(x.to_string());
            for y in parts {
                texts.push(format!("{x}.{y}"));
                for z in parts {
                    texts.push(format!("{x}.{y}.{z}"));
                }
            }
        }
        for pattern in &texts {
            for topic in &texts {
                assert_eq!(
                    matches(pattern, topic),
                    matches_by_segment(pattern, topic),
                    "pattern {pattern:?} topic {topic:?}"
                );
            }
        }
    }

    #[test]
    fn matcher_table() {
        let cases = [
            ("a.b", "a.b", true),
            ("a.b", "a.b.c", false),
            ("a.*", "a.b", true),
            ("a.*", "a.b.c", true),
            ("a.*", "a", false),
            ("a.*.c", "a.x.c", true),
            ("a.*.c", "a.c", false),
            ("a.*.c", "a.x.y.c", false),
            ("*", "anything.at.all", true),
            ("*", "x", true),
            ("*.b", "a.b", true),
            ("*.b", "a.b.c", false),
        ];
        for (p, t, want) in cases {
            assert_eq!(matches(p, t), want, "{p} vs {t}");
        }
    }

    #[test]
    fn grammar() {
        assert!(validate_pattern("tool.v1.execute.*").is_ok());
        assert!(validate_pattern("a.*.c").is_ok());
        assert_eq!(validate_pattern("a.b*"), Err(TopicError::Wildcard));
        assert_eq!(validate_topic("a.*"), Err(TopicError::Wildcard));
        assert_eq!(validate_topic("a..b"), Err(TopicError::EmptySegment));
        assert_eq!(validate_topic(""), Err(TopicError::Empty));
        assert_eq!(validate_topic("a b"), Err(TopicError::BadCharacter));
        assert_eq!(
            validate_topic("1.2.3.4.5.6.7.8.9"),
            Err(TopicError::TooManySegments)
        );
        assert!(validate_topic("1.2.3.4.5.6.7.8").is_ok());
        assert_eq!(validate_topic(&"a".repeat(257)), Err(TopicError::TooLong));
    }
}
