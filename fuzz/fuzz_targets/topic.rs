//! Bus topic grammar and the §8.2 matcher, checked against a reference
//! written from the spec text: input is `pattern \n topic`.

#![no_main]

use astrid::policy::topic::{self, MAX_SEGMENTS, MAX_TOPIC_BYTES};
use libfuzzer_sys::fuzz_target;

/// §8.1 as a reference: at most 256 bytes and 8 non-empty segments, no
/// whitespace or control characters, `*` only as a whole pattern segment.
fn reference_valid(text: &str, pattern: bool) -> bool {
    let segments: Vec<&str> = text.split('.').collect();
    !text.is_empty()
        && text.len() <= MAX_TOPIC_BYTES
        && segments.len() <= MAX_SEGMENTS
        && segments.iter().all(|s| {
            !s.is_empty()
                && !s.chars().any(|c| c.is_whitespace() || c.is_control())
                && (!s.contains('*') || (pattern && *s == "*"))
        })
}

/// §8.2 as a reference, recursively: a non-final `*` matches exactly one
/// segment, a final `*` one or more, anything else itself.
fn reference_match(pattern: &[&str], topic: &[&str]) -> bool {
    match (pattern.split_first(), topic.split_first()) {
        (None, None) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some((&"*", [])), Some(_)) => true,
        (Some((&"*", prest)), Some((_, trest))) => reference_match(prest, trest),
        (Some((p, prest)), Some((t, trest))) => p == t && reference_match(prest, trest),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, topic_text) = text.split_once('\n').unwrap_or((text, text));

    for t in [pattern, topic_text] {
        let as_topic = topic::validate_topic(t);
        let as_pattern = topic::validate_pattern(t);
        assert_eq!(
            as_topic.is_ok(),
            reference_valid(t, false),
            "topic {t:?}: {as_topic:?}"
        );
        assert_eq!(
            as_pattern.is_ok(),
            reference_valid(t, true),
            "pattern {t:?}: {as_pattern:?}"
        );
        // Every topic is a pattern; a valid topic matches itself.
        if as_topic.is_ok() {
            assert!(as_pattern.is_ok());
            assert!(topic::matches(t, t), "{t:?} does not match itself");
        }
    }

    let p: Vec<&str> = pattern.split('.').collect();
    let t: Vec<&str> = topic_text.split('.').collect();
    let got = topic::matches(pattern, topic_text);
    let want = reference_match(&p, &t);
    let valid =
        topic::validate_pattern(pattern).is_ok() && topic::validate_topic(topic_text).is_ok();
    assert_eq!(
        got, want,
        "matches({pattern:?}, {topic_text:?}) = {got}, reference {want} (valid inputs: {valid})"
    );
    if valid {
        // A pattern without `*` is an exact name.
        if !pattern.contains('*') {
            assert_eq!(got, pattern == topic_text);
        }
        // A match never needs more segments than the topic has.
        if got {
            assert!(p.len() <= t.len());
        }
        // `pattern.*` matches exactly the strict descendants of `pattern`.
        if topic::validate_pattern(&format!("{pattern}.*")).is_ok() && !pattern.contains('*') {
            let descendant = topic_text.len() > pattern.len()
                && topic_text.starts_with(pattern)
                && topic_text.as_bytes()[pattern.len()] == b'.';
            assert_eq!(
                topic::matches(&format!("{pattern}.*"), topic_text),
                descendant
            );
        }
    }
});
