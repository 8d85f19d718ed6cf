"""HTTP routes of the product catalog (edge_runtime/query/catalog.py):

    GET    /v1/catalog                          every product: name, number of pictures, sizes, when added
    GET    /v1/catalog/{name}                   one product, with the URLs of its pictures
    GET    /v1/catalog/{name}/crops/{i}.png     picture i as stored (PNG)
    POST   /v1/catalog                          {"name": ..., "images": [base64 PNG/JPEG, ...]}: add or replace
    DELETE /v1/catalog/{name}                   remove

Names in paths are URL-encoded ("oat%20milk%201l") and matched like queries match them (case and
runs of whitespace do not matter). Pictures are checked as query pictures are (PNG or JPEG, size
read from the header before decoding). One catalog serves every stream. A runtime without a state
directory has no catalog: 409.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from edge_runtime.query.catalog import Catalog, CatalogError, normalise_name
from edge_runtime.serve.api_deps import GUARDED, Hub, Settings
from edge_runtime.serve.api_images import decode_image


class AddProduct(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # true is no number, "1" no time: refused
    name: str = Field(description="product name, e.g. 'oat milk 1l' (letters, digits, spaces, a little punctuation)")
    images: list[str] = Field(description="base64 PNG or JPEG pictures of the product (data: URLs are fine)")


def _catalog(hub) -> Catalog:
    catalog = getattr(hub, "catalog", None)
    if catalog is None:
        raise CatalogError("no product catalog: the runtime has no state directory (start with --state-dir)", 409)
    return catalog


def _with_urls(entry: dict[str, Any]) -> dict[str, Any]:
    base = f"/v1/catalog/{quote(entry['name'], safe='')}/crops"
    return {**entry, "crop_urls": [f"{base}/{i}.png" for i in range(entry["crops"])]}


# the catalog is ``hub.catalog``, shared by all streams (None: no state directory)
router = APIRouter(tags=["catalog"], dependencies=GUARDED)


@router.get("/v1/catalog")
def list_products(hub: Hub) -> dict[str, Any]:
    """Every product of the catalog and the catalog's limits."""
    catalog = _catalog(hub)
    return {"products": [_with_urls(e) for e in catalog.entries()], "limits": catalog.limits()}


@router.get("/v1/catalog/{name}")
def get_product(name: str, hub: Hub) -> dict[str, Any]:
    return _with_urls(_catalog(hub).entry(name))


@router.get("/v1/catalog/{name}/crops/{index}.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
def get_crop(name: str, index: int, hub: Hub) -> Response:
    return Response(_catalog(hub).crop_png(name, index), media_type="image/png", headers={"Cache-Control": "no-cache"})


@router.post("/v1/catalog")
def add_product(body: AddProduct, hub: Hub, settings: Settings) -> dict[str, Any]:
    """Add a product with its pictures; a product of the same name has its pictures replaced."""
    catalog = _catalog(hub)
    normalise_name(body.name)  # a bad name is refused before any picture is decoded
    catalog.check_count(len(body.images))
    limit = min(settings.max_image_pixels, catalog.max_pixels)
    images = [decode_image(data, f"images.{i}", limit) for i, data in enumerate(body.images)]
    return _with_urls(catalog.add(body.name, images))


@router.delete("/v1/catalog/{name}")
def remove_product(name: str, hub: Hub) -> dict[str, Any]:
    catalog = _catalog(hub)
    shown = catalog.entry(name)["name"]
    catalog.remove(name)
    return {"removed": shown}
