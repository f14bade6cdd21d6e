"""The connection to one region (clouds.yaml, openstacksdk's notices about itself quieted), and how openstacksdk's
and keystoneauth's failures leave this package.

Every failure of an isthmus.cloud call is one of::

    CloudError      a call failed in a way retrying may fix (HTTP 5xx, 408/409/429, refused, timeout)
     └ CopyError    an image copy failed or did not verify; the partial target image was removed
    SpecError       retrying cannot fix it (a 4xx such as a rule Neutron refuses, an unknown cloud, a bad key)
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import openstack
import openstack.config
from keystoneauth1 import exceptions as ks_exceptions
from openstack import exceptions as os_exceptions
from openstack import warnings as os_warnings
from openstack.connection import Connection

API_TIMEOUT = 60.0  # seconds one API call of a connection from open_region may take
RETRYABLE_STATUS = frozenset({408, 409, 425, 429})  # 4xx that may pass on a later try


class CloudError(Exception):
    """A call failed in a way retrying may fix (HTTP 5xx, connection refused, timeout); the message names the
    region, the kind of resource and its name."""


class CopyError(CloudError):
    """An image copy failed or did not verify; the partial target image was removed (or, when the target
    could not be reached to remove it, the next copy of the same intent removes it)."""


class SpecError(Exception):
    """Retrying cannot fix it: the spec, the credentials or the cloud's configuration must change."""


def quiet_openstacksdk() -> None:
    """Silence openstacksdk's notices about its own internals.

    openstacksdk 4.x warns (RemovedInSDK50Warning/RemovedInSDK60Warning) from
    inside itself on every resource it builds and every connection it makes,
    whatever the caller does (e.g. "The _compute_attributes method is
    deprecated for removal", an InfluxDB notice without InfluxDB configured).
    Only warnings raised in openstacksdk's own modules are ignored.
    """
    for category in (os_warnings.RemovedInSDK50Warning, os_warnings.RemovedInSDK60Warning):
        warnings.filterwarnings("ignore", category=category, module=r"openstack\.")


def open_region(cloud: str, region: str, config_file: str | None = None) -> Connection:
    """An openstacksdk Connection to region ``region`` of clouds.yaml entry ``cloud``.

    ``config_file``: that clouds.yaml and nothing else (no OS_* variables); None: openstacksdk's usual search
    ($OS_CLIENT_CONFIG_FILE, ./clouds.yaml, ~/.config/openstack, /etc/openstack). Each API call may take
    API_TIMEOUT seconds. Nothing is sent yet: a wrong password, or a region the catalog lacks, is the first
    call's SpecError.

    Raises SpecError when the file or the cloud is unknown, or the region is not in the cloud's ``regions``.
    """
    quiet_openstacksdk()
    try:
        if config_file is not None:
            if not os.path.isfile(config_file):
                raise SpecError(f"clouds.yaml {config_file}: no such file")
            config = openstack.config.OpenStackConfig(config_files=[config_file], load_envvars=False)
            return Connection(config=config.get_one(cloud=cloud, region_name=region, api_timeout=API_TIMEOUT))
        return openstack.connect(cloud=cloud, region_name=region, api_timeout=API_TIMEOUT)
    except (os_exceptions.SDKException, ks_exceptions.ClientException) as exc:
        raise SpecError(f"cloud {cloud!r} region {region!r}: {exc}") from exc


def region_name(conn: Connection) -> str:
    """The connection's region as messages and logs name it."""
    return conn.config.region_name or "the default region"


def http_text(exc: os_exceptions.HttpException) -> str:
    """The service's own message and the HTTP status."""
    text = exc.details or exc.message or str(exc)
    return f"{text} (HTTP {exc.status_code})" if exc.status_code else text


def by_status(where: str, status: int | None, text: str) -> Exception:
    """The error an HTTP ``status`` is: SpecError for a 4xx retrying cannot fix, else CloudError."""
    if status is not None and 400 <= status < 500 and status not in RETRYABLE_STATUS:
        return SpecError(f"{where}: {text}")
    return CloudError(f"{where}: {text}")


@contextlib.contextmanager
def calls(conn: Connection, what: str) -> Iterator[None]:
    """openstacksdk's and keystoneauth's failures inside as CloudError or SpecError naming the region and ``what``."""
    where = f"{region_name(conn)}: {what}"
    try:
        yield
    except (CloudError, SpecError):
        raise
    except os_exceptions.HttpException as exc:
        raise by_status(where, exc.status_code, http_text(exc)) from exc
    except (os_exceptions.ConfigException, os_exceptions.EndpointNotFound, ks_exceptions.CatalogException,
            ks_exceptions.AuthPluginException) as exc:
        raise SpecError(f"{where}: {exc}") from exc
    except ks_exceptions.HttpError as exc:
        raise by_status(where, exc.http_status, str(exc)) from exc
    # NotSupported also says "the service has no supported versions" when its version discovery failed (it
    # is down). OSError: what requests raises from inside a data stream (ConnectionError, ...).
    except (os_exceptions.SDKException, ks_exceptions.ClientException, OSError) as exc:
        raise CloudError(f"{where}: {exc}") from exc


def request(conn: Connection, service: str, method: str, path: str, **kwargs: Any) -> Any:
    """One request to the region's ``service`` (compute, network, placement); its JSON body ({} when empty),
    HTTP errors raised as openstacksdk's."""
    resp = getattr(conn, service).request(path, method, **kwargs)
    os_exceptions.raise_from_response(resp)
    return resp.json() if resp.content else {}


def has_service(conn: Connection, service_type: str) -> bool:
    """The region's catalog (or the connection's configuration) has ``service_type``."""
    return bool(conn.endpoint_for(service_type))


def field_text(item: Mapping[str, Any], key: str) -> str:
    """``item[key]`` of a JSON body as text, "" when absent or empty."""
    return str(item.get(key) or "")
