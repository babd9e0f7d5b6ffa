//! Prometheus metrics: command counts and latencies by command and outcome.
//!
//! Each [`Metrics`] owns its recorder instead of installing a global one, so several
//! servers (in tests, one process) keep separate figures and none fails to start.

use metrics::{describe_counter, describe_histogram, with_local_recorder, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use std::sync::Arc;
use std::time::Duration;

/// Commands handled, by `command` and `outcome` (`ok` or the error code).
pub const COMMANDS_TOTAL: &str = "homeroom_commands_total";
/// Time to handle a command, by `command` and `outcome`.
pub const COMMAND_DURATION: &str = "homeroom_command_duration_seconds";

/// Events a projector's serving generation is behind the head of the log, by `projector`.
pub const PROJECTION_LAG: &str = "homeroom_projection_lag";
/// 1 while a projector is parked at an event it cannot apply (its views have stopped),
/// else 0, by `projector`: the alert an operator needs.
pub const PROJECTION_PARKED: &str = "homeroom_projection_parked";

/// Histogram buckets in seconds: a command takes milliseconds, a slow disk a second.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One server's metrics. Clones share the figures.
#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics(..)")
    }
}

impl Metrics {
    /// Fresh, empty figures.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(COMMAND_DURATION.to_owned()), BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        with_local_recorder(&recorder, || {
            describe_counter!(
                COMMANDS_TOTAL,
                "Commands handled, by command and outcome (ok or the error code)."
            );
            describe_histogram!(
                COMMAND_DURATION,
                Unit::Seconds,
                "Time to handle a command, by command and outcome."
            );
            metrics::describe_gauge!(
                PROJECTION_LAG,
                "Events a projector's serving generation is behind the head of the log."
            );
            metrics::describe_gauge!(
                PROJECTION_PARKED,
                "1 while a projector is parked at an event it cannot apply, else 0."
            );
        });
        Self {
            recorder: Arc::new(recorder),
            handle,
        }
    }

    /// Counts one command and its latency.
    pub fn record(&self, command: &'static str, outcome: &'static str, elapsed: Duration) {
        with_local_recorder(&*self.recorder, || {
            let labels = [("command", command), ("outcome", outcome)];
            metrics::counter!(COMMANDS_TOTAL, &labels).increment(1);
            metrics::histogram!(COMMAND_DURATION, &labels).record(elapsed.as_secs_f64());
        });
    }

    /// Sets how far `projector` is behind the head of the log.
    pub fn projection_lag(&self, projector: &'static str, lag: u64) {
        with_local_recorder(&*self.recorder, || {
            metrics::gauge!(PROJECTION_LAG, "projector" => projector).set(lag as f64);
        });
    }

    /// Sets whether `projector` is parked.
    pub fn projection_parked(&self, projector: &'static str, parked: bool) {
        with_local_recorder(&*self.recorder, || {
            metrics::gauge!(PROJECTION_PARKED, "projector" => projector).set(if parked {
                1.0
            } else {
                0.0
            });
        });
    }

    /// The figures in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

/// The command service counts every command it decides here (see
/// [`homeroom_app::CommandMetrics`]); the API adds the requests refused before they
/// reached it (an unreadable body, an unknown field).
impl homeroom_app::CommandMetrics for Metrics {
    fn record(&self, command: &'static str, outcome: &'static str, elapsed: Duration) {
        Metrics::record(self, command, outcome, elapsed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_servers_keep_their_own_figures() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.record("StopConversation", "ok", Duration::from_millis(3));
        let text = a.render();
        assert!(
            text.contains(r#"homeroom_commands_total{command="StopConversation",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("homeroom_command_duration_seconds_bucket"),
            "{text}"
        );
        assert!(!b.render().contains("StopConversation"));
    }

    #[test]
    fn a_park_shows_until_it_is_cleared() {
        let m = Metrics::new();
        m.projection_parked("audit", true);
        assert!(m
            .render()
            .contains(r#"homeroom_projection_parked{projector="audit"} 1"#));
        m.projection_parked("audit", false);
        assert!(m
            .render()
            .contains(r#"homeroom_projection_parked{projector="audit"} 0"#));
    }
}
