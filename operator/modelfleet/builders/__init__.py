"""Pure builders of the Kubernetes objects a modelfleet Deployment owns.

Each `build_*` returns a manifest (a plain dict, ready for server-side apply); nothing here talks to a
cluster. Per version in play: an apps/v1 Deployment and a Service. Per modelfleet Deployment: the
router's Deployment, Service (the Deployment's endpoint), ServiceAccount, Role, RoleBinding and
ConfigMap.
"""

from modelfleet.builders.manifests import (
    COMPONENT_MODEL,
    COMPONENT_ROUTER,
    DEFAULT_ROUTER_IMAGE,
    DEPLOYMENT_LABEL,
    FIELD_MANAGER,
    MANAGED_BY,
    ROUTER_ADMIN_PORT,
    ROUTER_TRAFFIC_PORT,
    VERSION_ANNOTATION,
    Owner,
    build_router_config,
    build_router_configmap,
    build_router_deployment,
    build_router_role,
    build_router_role_binding,
    build_router_service,
    build_router_service_account,
    build_version_deployment,
    build_version_service,
    endpoint,
    labels,
    owned_selector,
    router_name,
    service_name,
    version_object_name,
    version_url,
)

__all__ = [
    "COMPONENT_MODEL",
    "COMPONENT_ROUTER",
    "DEFAULT_ROUTER_IMAGE",
    "DEPLOYMENT_LABEL",
    "FIELD_MANAGER",
    "MANAGED_BY",
    "ROUTER_ADMIN_PORT",
    "ROUTER_TRAFFIC_PORT",
    "VERSION_ANNOTATION",
    "Owner",
    "build_router_config",
    "build_router_configmap",
    "build_router_deployment",
    "build_router_role",
    "build_router_role_binding",
    "build_router_service",
    "build_router_service_account",
    "build_version_deployment",
    "build_version_service",
    "endpoint",
    "labels",
    "owned_selector",
    "router_name",
    "service_name",
    "version_object_name",
    "version_url",
]
