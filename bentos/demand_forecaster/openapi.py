"""/docs.json as the service really answers.

BentoML documents 400, 404 and 500 for every API, with its own error schema (`detail` a string).
The middleware's contract differs: 401, 413, 415 and 422 as well, and `detail` lists the field
errors. A fuzzer checking responses against the spec needs the real list.
"""

from __future__ import annotations

from typing import Any

ERROR_REF = {"$ref": "#/components/schemas/Error"}
SCHEMAS = {
    "Error": {"type": "object", "required": ["error"], "properties": {
        "error": {"type": "string"},
        "detail": {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}}}},
    "FieldError": {"type": "object", "required": ["field", "message", "type"], "properties": {
        "field": {"type": "string", "description": "Path in the body, e.g. requests.3.date"},
        "message": {"type": "string"}, "type": {"type": "string"}}},
}
WHEN = {
    400: "Malformed JSON body.",
    401: "Missing or wrong bearer token (only when the server has RETAIL_ML_API_TOKEN set).",
    404: "Unknown store or item, or no active series for the pair.",
    413: "More requests than the batch limit (RETAIL_ML_MAX_BATCH, default 10000).",
    415: "Body not sent as application/json.",
    422: "Schema violation (`detail` names each field path), a date outside the servable "
         "horizon (the message gives the valid range), or a price/on_promo override while "
         "no online feature state is published.",
    500: "A fault of the server, never of the request.",
}
STATUSES = {"/forecast": (400, 401, 404, 415, 422, 500),
            "/forecast_batch": (400, 401, 404, 413, 415, 422, 500),
            "/model": (401, 500)}


def with_real_errors(spec: dict[str, Any]) -> dict[str, Any]:
    """`spec` (BentoML's, as a dict) with each route's actual error responses and the optional
    bearer auth."""
    spec["components"]["schemas"].update(SCHEMAS)
    spec["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, statuses in STATUSES.items():
        for operation in spec["paths"][path].values():
            ok = {k: v for k, v in operation["responses"].items() if str(k).startswith("2")}
            operation["responses"] = {**ok, **{str(s): {
                "description": WHEN[s], "content": {"application/json": {"schema": ERROR_REF}}}
                for s in statuses}}
            operation["security"] = [{}, {"bearer": []}]  # no token, or a bearer token
    return spec
