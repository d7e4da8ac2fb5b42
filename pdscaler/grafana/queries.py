"""The dashboard's queries: SQL on pdscaler's decision log, PromQL on engine, GPU and
pdscaler metrics.

Template variables are written as Grafana expands them. In SQL, ``$namespace``, ``$policy``,
``$role`` and ``$action`` are multi-value variables, which Grafana's PostgreSQL data source
expands to quoted, comma-separated literals, hence ``IN (...)``; ``$__timeFilter(col)`` is
the data source's macro for the dashboard's time range. In PromQL, the same variables
expand to regular expressions, hence ``=~``.
"""

from __future__ import annotations

# --- SQL (Postgres) -----------------------------------------------------------------------

NAMESPACES_SQL = "SELECT DISTINCT namespace FROM policies ORDER BY 1"

POLICIES_SQL = "SELECT DISTINCT name FROM policies WHERE namespace IN ($namespace) ORDER BY 1"

# Scale changes as annotations on the replicas graph. The last step of a decision's chain
# is the one that set the final value, so its reason is the reason for the change.
DECISION_ANNOTATIONS_SQL = """\
SELECT
  decided_at AS "time",
  policy_name || ' ' || role || ': ' || current_replicas || ' -> ' || desired_replicas
    || ' (' || coalesce(steps -> -1 ->> 'reason', '?') || ', ' || status || ')'
    || coalesce(': ' || nullif(steps -> -1 ->> 'message', ''), '') AS text,
  action || ',' || role || ',' || status AS tags
FROM decisions
WHERE $__timeFilter(decided_at)
  AND action IN ('scale_up', 'scale_down')
  AND policy_namespace IN ($namespace)
  AND policy_name IN ($policy)
  AND role IN ($role)
ORDER BY decided_at"""

# The decision log. The two *_path columns carry data links to pdscaler's API.
DECISION_LOG_SQL = """\
SELECT
  id,
  decided_at,
  policy_namespace AS namespace,
  policy_name AS policy,
  policy_version AS version,
  role,
  mode,
  action,
  status,
  current_replicas AS current,
  desired_replicas AS desired,
  steps -> -1 ->> 'reason' AS reason,
  (SELECT string_agg((step ->> 'name') || ' ' || (step ->> 'value'), ' > ' ORDER BY n)
     FROM jsonb_array_elements(steps) WITH ORDINALITY AS chain (step, n)) AS chain,
  error,
  '/v1/decisions/' || id AS decision_path,
  '/v1/policies/' || policy_namespace || '/' || policy_name || '/versions/' || policy_version
    AS version_path
FROM decisions
WHERE $__timeFilter(decided_at)
  AND policy_namespace IN ($namespace)
  AND policy_name IN ($policy)
  AND role IN ($role)
  AND action IN ($action)
ORDER BY decided_at DESC, id DESC
LIMIT 1000"""

# --- PromQL -------------------------------------------------------------------------------

# Engine series (vLLM) carry namespace and a relabelled role, not the policy.
_ENGINE = 'namespace=~"$namespace", role=~"$role"'
# pdscaler's own series carry all three.
_OWN = 'namespace=~"$namespace", policy=~"$policy", role=~"$role"'
_SLO = 'namespace=~"$namespace", policy=~"$policy"'
_RATE = "[$__rate_interval]"


def _rate_by_pool(metric: str) -> str:
    return f"sum by (namespace, role) (rate({metric}{{{_ENGINE}}}{_RATE}))"


def _latency_quantile(q: str, *names: str) -> str:
    """A histogram quantile over the first of ``names`` that has series (renamed metrics)."""
    sums = [f"sum by (le, namespace, role) (rate({n}_bucket{{{_ENGINE}}}{_RATE}))" for n in names]
    return f"histogram_quantile({q}, {' or '.join(sums)})"


# GPU series from the DCGM exporter name the pod, not its role: take the role from the
# engine series of the same pod.
_POD_ROLE = f"group by (namespace, pod, role) (vllm:num_requests_running{{{_ENGINE}}})"


def _per_pool_gpu(aggregation: str, metric: str) -> str:
    return (
        f'{aggregation} by (namespace, role) ({metric}{{namespace=~"$namespace"}}'
        f" * on (namespace, pod) group_left (role) {_POD_ROLE})"
    )


REQUEST_RATE = _rate_by_pool("vllm:request_success_total")
FORECAST_ARRIVAL_RATE = (
    f'max by (namespace, policy, role) (pdscaler_forecast_value{{{_OWN}, signal="arrivalRate"}})'
)
PROMPT_TOKEN_RATE = _rate_by_pool("vllm:prompt_tokens_total")
GENERATION_TOKEN_RATE = _rate_by_pool("vllm:generation_tokens_total")

CURRENT_REPLICAS = f"max by (namespace, policy, role) (pdscaler_current_replicas{{{_OWN}}})"
DESIRED_REPLICAS = f"max by (namespace, policy, role) (pdscaler_desired_replicas{{{_OWN}}})"
READY_REPLICAS = f"max by (namespace, policy, role) (pdscaler_ready_replicas{{{_OWN}}})"
PENDING_REPLICAS = f"max by (namespace, policy, role) (pdscaler_pending_replicas{{{_OWN}}})"

_TTFT = "vllm:time_to_first_token_seconds"
_ITL = ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds")
QUANTILES = ("0.5", "0.9", "0.99")
TTFT_QUANTILES = {q: _latency_quantile(q, _TTFT) for q in QUANTILES}
ITL_QUANTILES = {q: _latency_quantile(q, *_ITL) for q in QUANTILES}
TTFT_SLO = f"max by (namespace, policy) (pdscaler_slo_ttft_seconds{{{_SLO}}})"
ITL_SLO = f"max by (namespace, policy) (pdscaler_slo_itl_seconds{{{_SLO}}})"

KV_CACHE_UTILISATION = (
    f"avg by (namespace, role) (vllm:kv_cache_usage_perc{{{_ENGINE}}})"
    f" or avg by (namespace, role) (vllm:gpu_cache_usage_perc{{{_ENGINE}}})"
)
QUEUED_REQUESTS = f"sum by (namespace, role) (vllm:num_requests_waiting{{{_ENGINE}}})"
RUNNING_REQUESTS = f"sum by (namespace, role) (vllm:num_requests_running{{{_ENGINE}}})"

GPU_UTILISATION = _per_pool_gpu("avg", "DCGM_FI_DEV_GPU_UTIL")
GPU_POWER = _per_pool_gpu("sum", "DCGM_FI_DEV_POWER_USAGE")

DECISIONS_BY_ACTION = (
    f"sum by (policy, role, action) (increase(pdscaler_decisions_total{{{_OWN}}}{_RATE}))"
)
TICK_DURATION = {
    q: f"histogram_quantile({q}, sum by (le) (rate(pdscaler_tick_duration_seconds_bucket{_RATE})))"
    for q in ("0.5", "0.99")
}
METRICS_SOURCE_ERRORS = f"sum (rate(pdscaler_metrics_source_errors_total{_RATE}))"
SIGNAL_QUALITY = f"sum by (quality) (rate(pdscaler_signal_quality_total{_RATE}))"
ACTUATIONS = f"sum by (status_code) (rate(pdscaler_actuations_total{_RATE}))"
FORECAST_ERROR = (
    f"max by (namespace, policy, role, signal) (pdscaler_forecast_recent_error{{{_OWN}}})"
)
LEADERS = "sum (pdscaler_leader)"
REPLICAS_BY_VERSION = "count by (version) (pdscaler_build_info)"
