"""Parses a /metrics exposition (stdin) with the Prometheus project's own Python parsers and
prints its samples as JSON: strictly as OpenMetrics text (what jitgate serves, and what
Prometheus asks for first), and as the classic Prometheus text format. Exits non-zero, with
the parser's reason on stderr, when either refuses the text."""

import json
import sys

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families as classic_families

text = sys.stdin.read()
samples = []
for family in openmetrics_families(text):
    for s in family.samples:
        samples.append(
            {"family": family.name, "type": family.type, "name": s.name,
             "labels": s.labels, "value": s.value}
        )
classic = sum(len(f.samples) for f in classic_families(text))
json.dump({"samples": samples, "classic": classic}, sys.stdout)
