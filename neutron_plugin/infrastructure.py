"""The infrastructure API's service plugin: Neutron's REST calls on sites, endpoints and connections, each
answered by the isthmus coordinator.

neutron.conf::

    [DEFAULT]
    service_plugins = router,isthmus.neutron_plugin.infrastructure.InfrastructurePlugin
    api_extensions_path = <site-packages>/isthmus/neutron_plugin/extensions
    [isthmus]
    coordinator = unix:/run/isthmus/coordinator.sock

The plugin keeps no copy: etcd, through the coordinator, is the only store. Each request is one or a few
coordinator calls made on behalf of the Keystone user (``config.on_behalf_of``), and every refusal becomes
the status Neutron would give (``errors.translate``): 400 naming the field, 404, 409, and 503 when the
coordinator cannot be reached, in which case nothing was written. Filters, ``fields=``, sorting and
pagination behave as for Neutron's own resources (sorting and pagination done by Neutron's API layer over
the plugin's answer, "emulated" in its terms).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from neutron_lib.services import base as service_base

from isthmus.neutron_plugin import config, infra_api
from isthmus.neutron_plugin import infra_forms as forms
from isthmus.neutron_plugin.client import Coordinator, CoordinatorError
from isthmus.neutron_plugin.errors import IsthmusNotFound, translate

LOG = logging.getLogger(__name__)
PAGE = 1000  # the coordinator's largest page


def _wants(fields: Iterable[str] | None, filters: dict[str, Any] | None, observed: Iterable[str]) -> bool:
    """Whether an answer needs what the agents observe: no ``fields=``, or an observed attribute is named in
    ``fields=`` or filtered on."""
    named = {f for f in fields or () if f}
    return not named or bool((named | set(filters or {})) & set(observed))


class InfrastructurePlugin(service_base.ServicePluginBase):
    """Sites, endpoints and connections of isthmus as Neutron resources under ``/v2.0/infra``."""

    supported_extension_aliases = [infra_api.ALIAS]
    path_prefix = infra_api.PATH_PREFIX
    # With Neutron's filter validation on (the filter-validation extension), an unknown filter is refused
    # with 400 as for Neutron's own resources. Sorting and pagination are done by Neutron's API layer.
    __filter_validation_support = True
    __native_pagination_support = False
    __native_sorting_support = False

    def __init__(self) -> None:
        super().__init__()
        self.coordinator: Coordinator = config.coordinator(config.register())
        LOG.info("isthmus infrastructure API at %s, served by the coordinator at %s", self.path_prefix,
                 self.coordinator.settings.address)

    def get_plugin_type(self) -> str:
        return infra_api.PLUGIN_TYPE

    def get_plugin_description(self) -> str:
        return infra_api.DESCRIPTION

    # ------------------------------------------------------------ the coordinator

    def _call(self, context: Any, service: str, method: str, request: dict[str, Any], resource: str,
              object_id: str = "") -> dict[str, Any]:
        try:
            return self.coordinator.call(service, method, request, on_behalf_of=config.on_behalf_of(context))
        except CoordinatorError as exc:
            LOG.info("isthmus answered %s %s with %s", method, object_id or request.get("name", ""), exc)
            raise translate(exc, resource, object_id) from None

    def _get(self, context: Any, service: str, method: str, request: dict[str, Any], resource: str,
             object_id: str) -> dict[str, Any]:
        """One object by its id: 404 when it does not exist, also when the id could not name one."""
        try:
            return self.coordinator.call(service, method, request, on_behalf_of=config.on_behalf_of(context))
        except CoordinatorError as exc:
            if exc.code == "INVALID_ARGUMENT":
                exc = CoordinatorError("NOT_FOUND", exc.message)
            raise translate(exc, resource, object_id) from None

    def _all(self, context: Any, service: str, method: str, key: str, resource: str,
             request: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every item of a paged list call."""
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            answer = self._call(context, service, method, {**(request or {}), "page_size": PAGE, "page_token": token},
                                resource)
            items += answer.get(key, [])
            token = answer.get("next_page_token", "")
            if not token:
                return items

    def _statuses(self, context: Any, sites: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """Site statuses by site, each with every peering row: of ``sites`` (one call each, more for a site
        whose rows take several answers), or of every site (one list)."""

        def rows_of(site: str) -> Callable[[str], dict[str, Any]]:
            return lambda token: self._call(context, "StatusService", "GetSiteStatus",
                                            {"site": site, "page_token": token}, "site", site)

        if sites is None:
            return {s["site"]: forms.with_all_rows(s, rows_of(s["site"]))
                    for s in self._all(context, "StatusService", "ListSiteStatus", "sites", "site")}
        out = {}
        for site in sorted(set(sites)):
            try:
                status = self.coordinator.call("StatusService", "GetSiteStatus", {"site": site},
                                               on_behalf_of=config.on_behalf_of(context))
            except CoordinatorError as exc:
                if exc.code != "NOT_FOUND":
                    raise translate(exc, "site") from None
                continue
            out[site] = forms.with_all_rows(status, rows_of(site))
        return out

    @staticmethod
    def _answer(what: str, view: dict[str, Any], add_observed: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """The answer to a write: the object as written, with what is observed when the coordinator still
        answers (a failure to read the status must not turn a done write into a 503)."""
        try:
            add_observed(view)
        except Exception as exc:  # noqa: BLE001
            LOG.warning("isthmus: %s %s was written; its status could not be read: %s", what, view["id"], exc)
        return view

    # ------------------------------------------------------------ sites

    def _site_observed(self, context: Any, view: dict[str, Any]) -> None:
        status = self._statuses(context, [view["name"]]).get(view["name"])
        if status is not None:
            view.update(forms.site_status_view(status, view["kind"]))

    def create_site(self, context: Any, site: dict[str, Any]) -> dict[str, Any]:
        made = self._call(context, "SiteService", "CreateSite", forms.site_request(site["site"]), "site")
        LOG.info("isthmus: site %s created (version %s)", made["name"], made.get("version"))
        view = forms.site_view(made, None)
        return self._answer("site", view, lambda v: self._site_observed(context, v))

    def get_site(self, context: Any, id: str, fields: list[str] | None = None) -> dict[str, Any]:
        site = self._get(context, "SiteService", "GetSite", {"name": id}, "site", id)
        view = forms.site_view(site, None)
        if _wants(fields, None, infra_api.SITE_STATUS):
            self._site_observed(context, view)
        return forms.only(view, fields)

    def get_sites(self, context: Any, filters: dict[str, Any] | None = None, fields: list[str] | None = None,
                  sorts: Any = None, limit: Any = None, marker: Any = None, page_reverse: bool = False
                  ) -> list[dict[str, Any]]:
        sites = self._all(context, "SiteService", "ListSites", "sites", "site")
        statuses = self._statuses(context) if _wants(fields, filters, infra_api.SITE_STATUS) else None
        views = [forms.site_view(s, None if statuses is None else statuses.get(s["name"], {})) for s in sites]
        return [forms.only(v, fields) for v in sorted(views, key=lambda v: v["id"]) if forms.matches(v, filters)]

    def update_site(self, context: Any, id: str, site: dict[str, Any]) -> dict[str, Any]:
        current = self._get(context, "SiteService", "GetSite", {"name": id}, "site", id)
        made = self._call(context, "SiteService", "UpdateSite", forms.site_update(current, site["site"]), "site", id)
        LOG.info("isthmus: site %s updated (version %s)", id, made.get("version"))
        return self._answer("site", forms.site_view(made, None), lambda v: self._site_observed(context, v))

    def delete_site(self, context: Any, id: str) -> None:
        self._call(context, "SiteService", "DeleteSite", {"name": id}, "site", id)
        LOG.info("isthmus: site %s deleted", id)

    # ------------------------------------------------------------ endpoints

    @staticmethod
    def _endpoint_key(id: str) -> dict[str, str]:
        try:
            site, name = forms.split_endpoint_id(id)
        except ValueError:
            raise IsthmusNotFound(resource="endpoint", id=id) from None
        return {"site": site, "name": name}

    def create_endpoint(self, context: Any, endpoint: dict[str, Any]) -> dict[str, Any]:
        made = self._call(context, "EndpointService", "CreateEndpoint", forms.endpoint_request(endpoint["endpoint"]),
                          "endpoint")
        LOG.info("isthmus: endpoint %s/%s created (version %s)", made["site"], made["name"], made.get("version"))
        return forms.endpoint_view(made)

    def get_endpoint(self, context: Any, id: str, fields: list[str] | None = None) -> dict[str, Any]:
        endpoint = self._get(context, "EndpointService", "GetEndpoint", self._endpoint_key(id), "endpoint", id)
        return forms.only(forms.endpoint_view(endpoint), fields)

    def get_endpoints(self, context: Any, filters: dict[str, Any] | None = None, fields: list[str] | None = None,
                      sorts: Any = None, limit: Any = None, marker: Any = None, page_reverse: bool = False
                      ) -> list[dict[str, Any]]:
        sites = (filters or {}).get("site") or []
        request = {"site": sites[0]} if len(sites) == 1 else {}  # one site: let the coordinator filter
        endpoints = self._all(context, "EndpointService", "ListEndpoints", "endpoints", "endpoint", request)
        views = sorted((forms.endpoint_view(e) for e in endpoints), key=lambda v: v["id"])
        return [forms.only(v, fields) for v in views if forms.matches(v, filters)]

    def update_endpoint(self, context: Any, id: str, endpoint: dict[str, Any]) -> dict[str, Any]:
        current = self._get(context, "EndpointService", "GetEndpoint", self._endpoint_key(id), "endpoint", id)
        request = forms.endpoint_update(current, endpoint["endpoint"])
        made = self._call(context, "EndpointService", "UpdateEndpoint", request, "endpoint", id)
        LOG.info("isthmus: endpoint %s updated (version %s)", id, made.get("version"))
        return forms.endpoint_view(made)

    def delete_endpoint(self, context: Any, id: str) -> None:
        self._call(context, "EndpointService", "DeleteEndpoint", self._endpoint_key(id), "endpoint", id)
        LOG.info("isthmus: endpoint %s deleted", id)

    # ------------------------------------------------------------ connections

    def _connection_observed(self, context: Any, views: list[dict[str, Any]], every: bool = False) -> None:
        """Add ``status`` and ``observed`` to connection views: the ends' roles and their sites' statuses
        are read one by one for a single connection, listed whole for more (``every``)."""
        if every:
            endpoints = self._all(context, "EndpointService", "ListEndpoints", "endpoints", "endpoint")
            roles = {v["id"]: v["role"] for v in map(forms.endpoint_view, endpoints)}
            statuses = self._statuses(context)
        else:
            ends = {v[end] for v in views for end in ("a", "b")}
            roles = {}
            for end in sorted(ends):
                try:
                    found = self.coordinator.call("EndpointService", "GetEndpoint", self._endpoint_key(end),
                                                  on_behalf_of=config.on_behalf_of(context))
                    roles[end] = forms.endpoint_view(found)["role"]
                except CoordinatorError as exc:
                    if exc.code != "NOT_FOUND":
                        raise translate(exc, "connection") from None
            statuses = self._statuses(context, [forms.split_endpoint_id(e)[0] for e in ends])
        for view in views:
            forms.with_observed(view, roles, statuses)

    def create_connection(self, context: Any, connection: dict[str, Any]) -> dict[str, Any]:
        made = self._call(context, "ConnectionService", "CreateConnection",
                          forms.connection_request(connection["connection"]), "connection")
        LOG.info("isthmus: connection %s created (version %s)", made["name"], made.get("version"))
        return self._answer("connection", forms.connection_view(made),
                            lambda v: self._connection_observed(context, [v]))

    def get_connection(self, context: Any, id: str, fields: list[str] | None = None) -> dict[str, Any]:
        conn = self._get(context, "ConnectionService", "GetConnection", {"name": id}, "connection", id)
        view = forms.connection_view(conn)
        if _wants(fields, None, infra_api.CONNECTION_STATUS):
            self._connection_observed(context, [view])
        return forms.only(view, fields)

    def get_connections(self, context: Any, filters: dict[str, Any] | None = None, fields: list[str] | None = None,
                        sorts: Any = None, limit: Any = None, marker: Any = None, page_reverse: bool = False
                        ) -> list[dict[str, Any]]:
        conns = self._all(context, "ConnectionService", "ListConnections", "connections", "connection")
        views = sorted((forms.connection_view(c) for c in conns), key=lambda v: v["id"])
        if views and _wants(fields, filters, infra_api.CONNECTION_STATUS):
            self._connection_observed(context, views, every=True)
        return [forms.only(v, fields) for v in views if forms.matches(v, filters)]

    def update_connection(self, context: Any, id: str, connection: dict[str, Any]) -> dict[str, Any]:
        current = forms.connection_view(
            self._get(context, "ConnectionService", "GetConnection", {"name": id}, "connection", id))
        request = forms.connection_update(current, connection["connection"])
        made = self._call(context, "ConnectionService", "UpdateConnection", request, "connection", id)
        LOG.info("isthmus: connection %s updated (version %s)", id, made.get("version"))
        return self._answer("connection", forms.connection_view(made),
                            lambda v: self._connection_observed(context, [v]))

    def delete_connection(self, context: Any, id: str) -> None:
        self._call(context, "ConnectionService", "DeleteConnection", {"name": id}, "connection", id)
        LOG.info("isthmus: connection %s deleted", id)
