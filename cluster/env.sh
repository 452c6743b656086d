#!/usr/bin/env bash
# Print the environment for talking to the local cluster:  eval "$(cluster/env.sh)"
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
echo "export KUBECONFIG=$KUBECONFIG_ADMIN"
echo "export PATH=$K8S_BIN:\$PATH"
