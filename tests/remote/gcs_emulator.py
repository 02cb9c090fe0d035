"""gcp-storage-emulator, in memory, with GCS's write precondition (``ifGenerationMatch``).

The emulator answers what gcsfs and Beam's GCS filesystem call (JSON API, resumable and batch
uploads, ranged downloads) but ignores preconditions, which the commit protocol relies on; this
launcher adds GCS's answer (412) to ``ifGenerationMatch=0`` on an existing object and to
``ifGenerationMatch=<generation>`` on an object that is absent or at another generation; and
it keeps a trailing ``\r`` of a multipart upload's content (gcsfs ends the part with a bare
``\n`` before the boundary, which the emulator's MIME parser takes with the ``\r`` as one line
ending: a shard ending in byte 13 lost it). ``fake-gcs-server`` is not used: it lacks the
batch API Beam's finalize calls.

Run: ``python tests/remote/gcs_emulator.py PORT``.
"""

import re
import sys
from http import HTTPStatus

from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

_insert = objects.insert


def insert(request, response, storage, *args, **kwargs):
    match = request.query.get("ifGenerationMatch", [""])[0]
    if match:
        name = (request.query.get("name") or [None])[0]
        if name is None and isinstance(request.data, dict):
            name = (request.data.get("meta") or request.data).get("name")
        try:
            generation = str(storage.get_file_obj(request.params["bucket_name"], name)[
                "generation"])
        except NotFound:
            generation = "0"
        if generation != match:
            response.status = HTTPStatus.PRECONDITION_FAILED
            response.json({"error": {"code": 412, "message": "conditionNotMet"}})
            return None
    return _insert(request, response, storage, *args, **kwargs)


objects.insert = insert

from gcp_storage_emulator import server  # noqa: E402  (its routes bind insert)

_read_data = server._read_data


def read_data(request_handler, query):
    data = _read_data(request_handler, query)
    kind = request_handler.headers.get("Content-Type") or ""
    boundary = re.search(r'boundary="?([^";]+)"?', kind)
    if kind.startswith("multipart/related") and boundary and isinstance(data, dict):
        raw = server._decode_raw_data(request_handler._raw, request_handler)
        marker = b"--" + boundary.group(1).encode()
        part = raw[raw.index(marker, raw.index(marker) + 1) + len(marker):raw.rindex(marker)]
        crlf, lf = part.find(b"\r\n\r\n"), part.find(b"\n\n")
        if crlf != -1 and (lf == -1 or crlf < lf):
            data["content"] = part[crlf + 4:-2]
        else:
            data["content"] = part[lf + 2:-1]
    return data


_read_raw_data = server._read_raw_data


def read_raw_data(request_handler):
    request_handler._raw = _read_raw_data(request_handler)
    return request_handler._raw


server._read_data = read_data
server._read_raw_data = read_raw_data

if __name__ == "__main__":
    server.create_server("127.0.0.1", int(sys.argv[1]), in_memory=True).run()
