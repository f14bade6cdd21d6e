"""Images (Glance v2) listed, and copied by name and data from one region into another.

isthmus's images carry the property ``isthmus_sync=<intent>`` (plus ``isthmus_source``, ``isthmus_rollout``),
set in the create itself, so even a copy cut short is recognised and cleaned up by the next copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

from openstack import exceptions as os_exceptions
from openstack.connection import Connection

from isthmus.cloud.outcome import CONFLICT, IN_SYNC, Outcome
from isthmus.cloud.session import CloudError, CopyError, SpecError, calls, http_text, region_name
from isthmus.core.sync import ImageInfo

log = logging.getLogger(__name__)

SYNC_PROPERTY = "isthmus_sync"
SOURCE_PROPERTY = "isthmus_source"
ROLLOUT_PROPERTY = "isthmus_rollout"
MAX_PROPERTY_LENGTH = 255  # Glance's limit for a property value

CONNECT_TIMEOUT = 10.0  # image data streams: to connect, and for each blocked send of the upload
DATA_TIMEOUT = 300.0  # image data streams: without a byte from the other side
ACTIVE_TIMEOUT = 120.0  # an uploaded image becomes active
PAGE_SIZE = 200  # images per Glance list request

# Glance's own image attributes; everything else on an image is a custom property.
BASE_IMAGE_ATTRIBUTES = frozenset({
    "id", "name", "status", "visibility", "protected", "os_hidden", "checksum", "os_hash_algo", "os_hash_value",
    "owner", "size", "virtual_size", "container_format", "disk_format", "created_at", "updated_at", "tags",
    "direct_url", "locations", "min_ram", "min_disk", "self", "file", "schema", "stores",
})
RESERVED_PROPERTY_PREFIX = "os_glance_"  # Glance sets these itself and refuses them in a create
ISTHMUS_PROPERTIES = frozenset({SYNC_PROPERTY, SOURCE_PROPERTY, ROLLOUT_PROPERTY})


def _image_info(body: dict[str, Any]) -> ImageInfo:
    def text(key: str) -> str:
        return str(body.get(key) or "")

    return ImageInfo(
        id=text("id"), name=text("name"), status=text("status"), size=int(body.get("size") or 0),
        checksum=text("checksum"), hash_algo=text("os_hash_algo"), hash_value=text("os_hash_value"),
        disk_format=text("disk_format"), container_format=text("container_format"), visibility=text("visibility"),
        owner=text("owner"), tags=tuple(sorted(body.get("tags") or ())),
        properties={k: v if isinstance(v, str) else json.dumps(v)
                    for k, v in body.items() if k not in BASE_IMAGE_ATTRIBUTES},
    )


def _glance(conn: Connection, method: str, path: str, **kwargs: Any) -> Any:
    """One Glance request (``path`` below /v2); its response, HTTP errors raised as openstacksdk's."""
    resp = conn.image.request(path, method, **kwargs)
    os_exceptions.raise_from_response(resp)
    return resp


def _image_bodies(conn: Connection, params: dict[str, str]) -> Iterator[dict[str, Any]]:
    """Every image matching ``params``, page by page."""
    marker = ""
    while True:
        page = _glance(conn, "GET", "/images", params={**params, "limit": str(PAGE_SIZE),
                                                        **({"marker": marker} if marker else {})}).json()
        images = page.get("images") or []
        yield from images
        following = urllib.parse.parse_qs(urllib.parse.urlsplit(page.get("next") or "").query).get("marker")
        if not images or not following or following[0] == marker:
            return
        marker = following[0]


def _images_named(conn: Connection, name: str) -> list[ImageInfo]:
    # Glance reads a name filter starting with "in:" as a list of names.
    params = {} if name.startswith("in:") else {"name": name}
    return [_image_info(b) for b in _image_bodies(conn, params) if b.get("name") == name]


def _image_body(conn: Connection, image_id: str) -> dict[str, Any] | None:
    try:
        body: dict[str, Any] = _glance(conn, "GET", f"/images/{urllib.parse.quote(image_id)}").json()
    except os_exceptions.NotFoundException:
        return None
    return body


def list_images(conn: Connection) -> list[ImageInfo]:
    """Every image the connection sees (all pages). Raises CloudError or SpecError."""
    with calls(conn, "images"):
        return [_image_info(b) for b in _image_bodies(conn, {})]


def get_image(conn: Connection, image_id: str) -> ImageInfo | None:
    """Image ``image_id``, None when the connection does not see it. Raises CloudError or SpecError."""
    with calls(conn, f"image {image_id}"):
        body = _image_body(conn, image_id)
    return _image_info(body) if body is not None else None


def _delete_image(conn: Connection, image_id: str) -> bool:
    try:
        _glance(conn, "DELETE", f"/images/{image_id}")
    except os_exceptions.NotFoundException:
        return False
    return True


def _verifies(image: ImageInfo, source: ImageInfo) -> bool:
    """Active with the source's data: size and MD5, and the multihash where both use the same algorithm."""
    return (image.status == "active" and image.size == source.size and image.checksum == source.checksum
            and (image.hash_algo != source.hash_algo or image.hash_value == source.hash_value))


def _differs(image: ImageInfo, source: ImageInfo) -> str:
    if image.status != "active":
        return f"it is {image.status}"
    return f"checksum {image.checksum or 'none'} and size {image.size}, the source's {source.checksum} and " \
           f"{source.size}"


def copy_image(source: Connection, target: Connection, image_id: str, intent: str, *, rollout: str = "",
               replace: bool = False, progress: Callable[[int, int], None] | None = None,
               chunk_size: int = 1 << 20) -> Outcome:
    """Make image ``image_id`` of ``source``'s region exist, by name and data, in ``target``'s region.

    In the target, of the images of the same name: one of ours (property isthmus_sync == ``intent``, whatever
    its rollout) that is active with the source's size, checksum and hash: IN_SYNC, created=True, nothing
    copied (it keeps the rollout that made it). Ours that are not (queued, saving, killed, other data) are
    deleted first: a new rollout's copy replaces the previous one's. Another one with the source's data:
    IN_SYNC, created=False. Another one with other data: CONFLICT; with ``replace`` it is deleted if isthmus
    made it (for another intent), never otherwise.

    Else the image is copied: a new image with the source's name, formats, visibility, min_disk, min_ram, tags
    and custom properties, plus isthmus_sync, isthmus_source (``<region>/<id>``) and isthmus_rollout (when
    given); its data streamed from the source in ``chunk_size`` pieces, never held whole, MD5 and the
    source's hash algorithm computed on the way; ``progress(done_bytes, total_bytes)`` after each piece (an
    exception from it stops the copy). The new image must become active with the size, checksum and hash of
    the source and of what was streamed.

    Raises CopyError when the upload or its verification fails (the new image is deleted); CloudError when
    the source image is not active or a region fails or cannot be reached before the copy; SpecError when the
    source image does not exist or has no name, or a region refuses in a way retrying cannot fix.
    """
    if chunk_size <= 0:
        raise SpecError(f"chunk_size {chunk_size}: must be positive")
    for key, value in ((SYNC_PROPERTY, intent), (ROLLOUT_PROPERTY, rollout)):
        if len(value) > MAX_PROPERTY_LENGTH or (key == SYNC_PROPERTY and not value):
            raise SpecError(f"{key} {value!r}: must be 1 to {MAX_PROPERTY_LENGTH} characters (an image property)")
    from_region, to_region = region_name(source), region_name(target)
    with calls(source, f"image {image_id}"):
        body = _image_body(source, image_id)
    if body is None:
        raise SpecError(f"{from_region}: image {image_id} does not exist")
    src = _image_info(body)
    if src.status != "active":
        raise CloudError(f"{from_region}: image {src.name} ({src.id}) is {src.status}, not active")
    if not src.name:
        raise SpecError(f"{from_region}: image {src.id} has no name (images are copied by name)")
    notes: list[str] = []
    with calls(target, f"image {src.name}"):
        same_name = _images_named(target, src.name)
        ours = [i for i in same_name if i.properties.get(SYNC_PROPERTY) == intent]
        for image in ours:
            if _verifies(image, src):
                return Outcome(IN_SYNC, f"already copied ({image.id})", image.id, True)
        for image in ours:
            if _delete_image(target, image.id):
                log.info("%s: deleted image %s (%s) of intent %s: %s", to_region, src.name, image.id, intent,
                         _differs(image, src))
                notes.append(f"deleted an earlier copy ({image.id}: {_differs(image, src)})")
        others = [i for i in same_name if i.properties.get(SYNC_PROPERTY) != intent]
        for image in others:
            if _verifies(image, src):
                return Outcome(IN_SYNC, f"already present, not isthmus's ({image.id})", image.id, False)
        for image in others:
            maker = image.properties.get(SYNC_PROPERTY, "")
            if not (replace and maker):
                made = f"made by isthmus for intent {maker}" if maker else "not made by isthmus"
                hint = "; replace deletes it" if maker else "; isthmus never deletes it"
                return Outcome(CONFLICT, f"image {src.name} ({image.id}) in {to_region} has other data "
                                         f"({_differs(image, src)}), {made}{hint}", image.id, False)
        for image in others:
            if _delete_image(target, image.id):
                maker = image.properties.get(SYNC_PROPERTY, "")
                log.info("%s: deleted image %s (%s) of intent %s to replace it", to_region, src.name, image.id,
                         maker)
                notes.append(f"replaced {image.id} of intent {maker}")
    return _copy(source, target, src, body, intent, rollout, progress, chunk_size, notes)


class _Transfer:
    """The source image's data on its way to the target: counted and hashed as it passes."""

    def __init__(self, chunks: Iterator[bytes], total: int, hash_algo: str,
                 progress: Callable[[int, int], None] | None) -> None:
        self._chunks = chunks
        self.total = total
        self.progress = progress
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.hasher: Any = None
        with contextlib.suppress(ValueError):  # an algorithm hashlib lacks: the target's own hash still counts
            self.hasher = hashlib.new(hash_algo) if hash_algo else None
        self.done = 0
        self.source_error: BaseException | None = None

    def body(self) -> Iterator[bytes]:
        """The upload's body. It raises when the source fails (never just ends): Glance must see a broken
        upload, not a complete short image."""
        while True:
            try:
                chunk = next(self._chunks, None)
            except BaseException as exc:
                self.source_error = exc
                raise
            if chunk is None:
                return
            if not chunk:
                continue
            self.done += len(chunk)
            if self.done > self.total:
                self.source_error = CopyError(f"the source sent more than its {self.total} bytes")
                raise self.source_error
            self.md5.update(chunk)
            if self.hasher is not None:
                self.hasher.update(chunk)
            if self.progress is not None:
                self.progress(self.done, self.total)
            yield chunk


def _copy(source: Connection, target: Connection, src: ImageInfo, body: dict[str, Any], intent: str,
          rollout: str, progress: Callable[[int, int], None] | None, chunk_size: int, notes: list[str]) -> Outcome:
    from_region, to_region = region_name(source), region_name(target)
    properties = {k: v for k, v in src.properties.items()
                  if k not in ISTHMUS_PROPERTIES and not k.startswith(RESERVED_PROPERTY_PREFIX)}
    properties[SYNC_PROPERTY] = intent
    properties[SOURCE_PROPERTY] = f"{from_region}/{src.id}"
    if rollout:
        properties[ROLLOUT_PROPERTY] = rollout
    record: dict[str, Any] = {
        **properties, "name": src.name, "disk_format": src.disk_format, "container_format": src.container_format,
        "visibility": src.visibility, "min_disk": int(body.get("min_disk") or 0),
        "min_ram": int(body.get("min_ram") or 0), "tags": list(src.tags),
    }
    timeout = (CONNECT_TIMEOUT, DATA_TIMEOUT)
    with calls(source, f"image {src.name} ({src.id})"):
        download = _glance(source, "GET", f"/images/{src.id}/file", stream=True, timeout=timeout)
    try:
        with calls(target, f"image {src.name}"):
            try:
                new_id = str(_glance(target, "POST", "/images", json=record).json()["id"])
            except os_exceptions.ForbiddenException:
                # Publishing needs the target's publicize_image / communitize_image policy (admin by default).
                if record["visibility"] not in ("public", "community"):
                    raise
                notes.append(f"visibility shared: {to_region} refused {record['visibility']}")
                record["visibility"] = "shared"
                new_id = str(_glance(target, "POST", "/images", json=record).json()["id"])
        log.info("%s: copying image %s (%s) of %s into %s (%d bytes)", to_region, src.name, src.id, from_region,
                 new_id, src.size)
        started = time.monotonic()
        transfer = _Transfer(download.iter_content(chunk_size), src.size, src.hash_algo, progress)
        uploaded = False
        try:
            _glance(target, "PUT", f"/images/{new_id}/file", data=transfer.body(),
                    headers={"Content-Type": "application/octet-stream"}, connect_retries=0, timeout=timeout)
            uploaded = True
            final = _wait_active(target, new_id)
            problems = _mismatches(src, transfer, final)
            if problems:
                raise CopyError("; ".join(problems))
        except BaseException as exc:
            cleanup = _discard(target, new_id)
            if not isinstance(exc, Exception):
                raise
            if transfer.source_error is not None:
                cause = f"reading the source failed after {transfer.done} of {src.size} bytes: " \
                        f"{_describe_error(transfer.source_error)}"
            elif isinstance(exc, CopyError):
                cause = str(exc)
            elif uploaded:
                cause = f"checking the copy failed: {_describe_error(exc)}"
            else:
                cause = f"the upload failed after {transfer.done} of {src.size} bytes: {_describe_error(exc)}"
            raise CopyError(f"{to_region}: copying image {src.name} ({src.id}) from {from_region}: {cause}; "
                            f"{cleanup}") from exc
    finally:
        download.close()
    took = time.monotonic() - started
    log.info("%s: copied image %s (%s) of %s into %s: %d bytes in %.1f s", to_region, src.name, src.id, from_region,
             new_id, src.size, took)
    return Outcome(IN_SYNC, "; ".join([*notes, f"copied {src.size} bytes in {took:.1f} s"]), new_id, True,
                   changed=True)


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, os_exceptions.HttpException):
        return http_text(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _wait_active(conn: Connection, image_id: str) -> ImageInfo:
    """The image once active; raises CopyError when it ends in another state or the deadline passes."""
    deadline = time.monotonic() + ACTIVE_TIMEOUT
    delay = 0.1
    while True:
        body = _image_body(conn, image_id)
        if body is None:
            raise CopyError("the new image disappeared after the upload")
        image = _image_info(body)
        if image.status == "active":
            return image
        if image.status not in ("saving", "uploading", "importing"):
            raise CopyError(f"the new image is {image.status} after the upload")
        if time.monotonic() + delay > deadline:
            raise CopyError(f"the new image is still {image.status} {ACTIVE_TIMEOUT:.0f} s after the upload")
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def _mismatches(src: ImageInfo, transfer: _Transfer, final: ImageInfo) -> list[str]:
    """How the copy differs from the source, and from what was streamed (empty when it verifies)."""
    problems = []
    if transfer.done != src.size:
        problems.append(f"{transfer.done} bytes streamed, the source has {src.size}")
    if src.checksum and transfer.md5.hexdigest() != src.checksum:
        problems.append(f"the streamed data's MD5 {transfer.md5.hexdigest()} is not the source's {src.checksum}")
    if transfer.hasher is not None and src.hash_value and transfer.hasher.hexdigest() != src.hash_value:
        problems.append(f"the streamed data's {src.hash_algo} is not the source's")
    if final.size != src.size:
        problems.append(f"the copy has {final.size} bytes, the source {src.size}")
    if final.checksum != src.checksum:
        problems.append(f"the copy's checksum {final.checksum} is not the source's {src.checksum}")
    if final.hash_algo == src.hash_algo and final.hash_value != src.hash_value:
        problems.append(f"the copy's {src.hash_algo} is not the source's")
    return problems


def _discard(conn: Connection, image_id: str) -> str:
    """Delete a copy that failed; says how that went."""
    region = region_name(conn)
    try:
        with calls(conn, f"image {image_id}"):
            _delete_image(conn, image_id)
    except (CloudError, SpecError) as exc:
        log.warning("%s: cannot delete the partial image %s: %s", region, image_id, exc)
        return f"the partial image {image_id} could not be deleted ({exc}); the next copy of this intent deletes it"
    log.info("%s: deleted the partial image %s", region, image_id)
    return f"the partial image {image_id} was deleted"


def remove_image(conn: Connection, intent: str, name: str, rollout: str = "") -> int:
    """Delete the images named ``name`` whose property isthmus_sync is ``intent`` (and isthmus_rollout is
    ``rollout``, when given); how many. Never touches another image. Raises CloudError or SpecError."""
    count = 0
    with calls(conn, f"image {name}"):
        for image in _images_named(conn, name):
            if image.properties.get(SYNC_PROPERTY) != intent:
                continue
            if rollout and image.properties.get(ROLLOUT_PROPERTY, "") != rollout:
                continue
            if _delete_image(conn, image.id):
                log.info("%s: deleted image %s (%s) of intent %s", region_name(conn), name, image.id, intent)
                count += 1
    return count
