//! The rule every service-backed test follows (PostgreSQL, NATS): when its service
//! cannot be reached, the test **fails** under `CI=true`, because CI must never pass by
//! testing nothing, and otherwise prints one `skipped: …` line to stderr and returns,
//! so a laptop without the service still runs the rest of the suite.
//!
//! Each adapter's `testing` module probes its own service and hands the outcome to
//! [`reachable_or_skip`]; the rule and its wording live here once.

/// Whether unreachable services must fail tests (`CI=true` or `CI=1`).
fn in_ci() -> bool {
    ci_from(std::env::var("CI").ok().as_deref())
}

fn ci_from(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Applies the rule to a probe of `service` at `url`: `true` when it answered;
/// otherwise a panic under `CI=true`, or the one `skipped:` line and `false`.
///
/// # Panics
/// When the probe failed and `CI=true`.
pub fn reachable_or_skip(service: &str, url: &str, probed: Result<(), String>) -> bool {
    rule(in_ci(), service, url, probed)
}

fn rule(ci: bool, service: &str, url: &str, probed: Result<(), String>) -> bool {
    match probed {
        Ok(()) => true,
        Err(reason) if ci => panic!(
            "{service} not reachable at {url} ({reason}) and CI=true: service-backed tests must run in CI"
        ),
        Err(reason) => {
            eprintln!(
                "skipped: {service} not reachable at {url} ({reason}); set CI=true to make this a failure"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_that_answered_runs_in_ci_and_off_it() {
        assert!(rule(true, "PostgreSQL", "postgres://x", Ok(())));
        assert!(rule(false, "PostgreSQL", "postgres://x", Ok(())));
    }

    #[test]
    fn an_unreachable_service_is_skipped_off_ci() {
        assert!(!rule(false, "NATS", "nats://x", Err("refused".to_owned())));
    }

    #[test]
    #[should_panic(expected = "NATS not reachable at nats://x (refused) and CI=true")]
    fn an_unreachable_service_fails_in_ci() {
        rule(true, "NATS", "nats://x", Err("refused".to_owned()));
    }

    #[test]
    fn ci_is_true_or_one() {
        for (value, ci) in [
            (Some("true"), true),
            (Some("TRUE"), true),
            (Some("1"), true),
            (Some("false"), false),
            (Some(""), false),
            (None, false),
        ] {
            assert_eq!(ci_from(value), ci, "CI={value:?}");
        }
    }
}
