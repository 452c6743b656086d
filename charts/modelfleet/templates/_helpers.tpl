{{/* Chart name, at most 63 characters. */}}
{{- define "modelfleet.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name of the release's objects: the release name, suffixed with the chart name unless it has it. */}}
{{- define "modelfleet.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "modelfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "modelfleet.labels" -}}
{{ include "modelfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelfleet
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "modelfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "modelfleet.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "modelfleet.image" -}}
{{- printf "%s:%s" .Values.image.repository (toString .Values.image.tag) -}}
{{- end -}}

{{/*
What the operator does in each namespace it watches; bound cluster-wide (ClusterRole) when it watches
all namespaces, else by one Role per watched namespace. No wildcards; Secrets are written, never read.
*/}}
{{- define "modelfleet.namespacedRules" -}}
# The namespaced kinds: kopf watches them and keeps its bookkeeping in their annotations.
- apiGroups: [modelfleet.io]
  resources: [models, deployments, monitors, runtimes]
  verbs: [get, list, watch, patch]
# ModelVersions also made: the MLflow sync mirrors a registered model's versions.
- apiGroups: [modelfleet.io]
  resources: [modelversions]
  verbs: [get, list, watch, create, patch]
# One status writer per kind.
- apiGroups: [modelfleet.io]
  resources: [models/status, modelversions/status, deployments/status, monitors/status, runtimes/status]
  verbs: [patch]
# Artifact check pods are owned by their ModelVersion.
- apiGroups: [modelfleet.io]
  resources: [modelversions/finalizers]
  verbs: [update]
# Owned objects carry blockOwnerDeletion, which clusters with OwnerReferencesPermissionEnforcement
# allow only to whoever may update the owner's finalizers.
- apiGroups: [modelfleet.io]
  resources: [deployments/finalizers]
  verbs: [update]
# Model and router pods: applied (server-side apply creates or patches), watched, and removed per version.
# Every owned kind is watched so that a hand-deleted or hand-edited object is restored at once.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch, delete]
# Router configuration. get/list/watch also because the router's Role grants them (no escalation).
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, patch]
# The router's identity and its read access to its own ConfigMap.
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [list, watch, create, patch]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [list, watch, create, patch]
# Router pods, to scrape their /metrics, /predictions, /inputs and /feedback; artifact check pods, made
# before a version rolls out and removed once they have reported. The operator reads no Secret unless
# allowed below: a check that needs credentials gets the Secret in its own pod.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
# Each Deployment's Secret <name>-router-admin with its routers' admin token (server-side apply). Written
# only: the operator derives the token from its own key and never gets, lists or watches these Secrets.
- apiGroups: [""]
  resources: [secrets]
  verbs: [create, patch]
# Each Deployment's routers' NetworkPolicy (admin port to the operator and Prometheus), watched so that a
# hand-deleted one is restored, removed when routerNetworkPolicy.enabled is false.
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [list, watch, create, patch, delete]
{{- if or .Values.mlflow.readSecrets .Values.referenceProfiles.readSecrets }}
# mlflow.readSecrets: the MLflow sync reads the Secrets that Models name for the tracking server's
# credentials and webhook secret; referenceProfiles.readSecrets: the Monitors' dataDrift reads those that
# ModelVersions name for their reference profile's store (get only: it never lists or watches Secrets).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end }}
{{- end -}}

{{/* Namespaces to watch, validated: an empty list means all namespaces. */}}
{{- define "modelfleet.watchNamespaces" -}}
{{- $seen := dict -}}
{{- range .Values.watchNamespaces -}}
{{- if hasKey $seen . -}}
{{- fail (printf "watchNamespaces: %s is listed twice" .) -}}
{{- end -}}
{{- $_ := set $seen . true -}}
{{- end -}}
{{- toJson .Values.watchNamespaces -}}
{{- end -}}
