"""Reading /metrics the way Prometheus does: the exposition text parsed by prometheus_client's parser."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        """One sample's value (0 when absent: a counter no process has touched yet)."""
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """The sum over the samples of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for (n, lab), v in self.samples.items() if n == name and wanted <= set(lab))

    def has(self, name: str) -> bool:
        return any(n == name for n, _ in self.samples)


def scrape(client: Any, **headers: Any) -> Scrape:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content[:300]
    return Scrape(response.content.decode())
