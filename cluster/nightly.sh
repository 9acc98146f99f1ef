#!/bin/sh
# The nightly path, run as a Ray job on the cluster (the RayCronJob's entrypoint, or `ray job submit` from cron; see
# cluster/README.md "Nightly"): the nightly sweep, then its regression verdict against the pinned baseline.
# Who is told: with $S4SWEEP_WEBHOOK_URL set (from a Kubernetes Secret, never inline), `regress` posts its verdict,
# pass or regression, and this script posts one message when a step fails otherwise (a failed sweep, unusable inputs).
# The script exits with the failing step's status, so the Ray job, and the RayJob around it, end FAILED.
set -u
cd "$(dirname "$0")/.." || exit 2  # the project directory: the sweep file and the baseline are relative to it

step=sweep
s4sweep sweep search_spaces/nightly.yaml --trigger nightly
status=$?
if [ "$status" -eq 0 ]; then
  step=regress
  s4sweep regress nightly --baseline search_spaces/baselines/nightly.json \
    ${S4SWEEP_WEBHOOK_URL:+--webhook "$S4SWEEP_WEBHOOK_URL"}
  status=$?
fi

# regress exiting 1 (a regression) has posted its verdict already
if [ "$status" -ne 0 ] && [ -n "${S4SWEEP_WEBHOOK_URL:-}" ] && ! { [ "$step" = regress ] && [ "$status" -eq 1 ]; }; then
  python - "$step" "$status" <<'PY' || echo "nightly: the webhook post failed too" >&2
import json, os, socket, sys, urllib.request

step, status = sys.argv[1], int(sys.argv[2])
meaning = {("sweep", 1): "some trials failed", ("sweep", 2): "unusable inputs (sweep file, data, tracking server)",
           ("sweep", 130): "interrupted", ("regress", 2): "unusable inputs (no finished run, or a broken baseline)"}
text = (f"s4sweep nightly: `{step}` exited {status}: {meaning.get((step, status), 'failed')}. "
        f"Host {socket.gethostname()}, MLflow {os.environ.get('MLFLOW_TRACKING_URI', '(unset)')}, experiment `nightly`.")
body = {"headline": text, "text": text, "step": step, "exit_code": status}  # `text`: Slack-style receivers
request = urllib.request.Request(os.environ["S4SWEEP_WEBHOOK_URL"], data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
urllib.request.urlopen(request, timeout=20).close()
PY
fi
exit "$status"
