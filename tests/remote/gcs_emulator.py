"""gcp-storage-emulator, in memory, with GCS's write precondition (``ifGenerationMatch``).

The emulator answers what gcsfs and Beam's GCS filesystem call (JSON API, resumable and batch
uploads, ranged downloads) but ignores preconditions, which the commit protocol relies on; this
launcher adds GCS's answer (412) to ``ifGenerationMatch=0`` on an existing object and to
``ifGenerationMatch=<generation>`` on an object that is absent or at another generation, and
nothing else. ``fake-gcs-server`` is not used: it lacks the batch API Beam's finalize calls.

Run: ``python tests/remote/gcs_emulator.py PORT``.
"""

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

from gcp_storage_emulator.server import create_server  # noqa: E402  (routes bind insert)

if __name__ == "__main__":
    create_server("127.0.0.1", int(sys.argv[1]), in_memory=True).run()
