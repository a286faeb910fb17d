"""Metrics: a fresh registry per Metrics, bounded labels, Prometheus text that parses back."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from service.metrics import Metrics, reason_label


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode("utf-8")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_counters_and_gauges_render_and_parse_back() -> None:
    metrics = Metrics()
    metrics.articles_published.set(42)
    metrics.digests_sent.inc(3)
    metrics.deferred("timeout")
    metrics.deferred("timeout")
    metrics.failed("Mailbox unavailable: user@example.vn")  # free text: not a label value
    metrics.smtp_seconds.observe(0.2)
    metrics.run_seconds.labels(job="scan").observe(0.5)
    metrics.request("feed", 304)
    samples = _samples(metrics)
    assert samples[("bantin_articles_published", ())] == 42
    assert samples[("bantin_digests_sent_total", ())] == 3
    assert samples[("bantin_digests_deferred_total", (("reason", "timeout"),))] == 2
    assert samples[("bantin_digests_failed_total", (("reason", "other"),))] == 1
    assert samples[("bantin_smtp_latency_seconds_count", ())] == 1
    assert samples[("bantin_run_duration_seconds_count", (("job", "scan"),))] == 1
    assert samples[("bantin_run_duration_seconds_count", (("job", "digest"),))] == 0
    assert samples[("bantin_http_requests_total", (("kind", "feed"), ("status", "304")))] == 1
    assert samples[("bantin_http_not_modified_total", (("kind", "feed"),))] == 1
    assert samples[("bantin_http_not_modified_total", (("kind", "page"),))] == 0


def test_each_metrics_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.digests_sent.inc()
    assert _samples(second)[("bantin_digests_sent_total", ())] == 0


def test_reason_labels_are_short_codes() -> None:
    assert reason_label("smtp_4xx") == "smtp_4xx"
    assert reason_label("") == "other"
    assert reason_label("x" * 33) == "other"
    assert reason_label("450 Mailbox busy") == "other"
