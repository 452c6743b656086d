#!/usr/bin/env bash
# Show whether the local cluster is running: its processes, the API server and the node.
# Exits 0 when the cluster is healthy, 1 otherwise.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ok=0
for c in "${COMPONENTS[@]}"; do
  if is_running "$c"; then printf '  %-24s running (pid %s)\n' "$c" "$(pid_of "$c")"
  else printf '  %-24s stopped\n' "$c"; ok=1; fi
done
if api_healthy; then
  echo "  API server               ready at https://127.0.0.1:$API_PORT"
  kubectl_admin --request-timeout=5s get nodes -o wide 2>/dev/null | sed 's/^/  /'
  kubectl_admin --request-timeout=5s -n kube-system get pods 2>/dev/null | sed 's/^/  /'
  echo "  KUBECONFIG=$KUBECONFIG_ADMIN   (eval \"\$(cluster/env.sh)\")"
else
  echo "  API server               not answering"; ok=1
fi
exit $ok
