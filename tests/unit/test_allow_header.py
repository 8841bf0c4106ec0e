"""What a 405's Allow names: the document's methods of the path, literal paths first."""

from __future__ import annotations

from soma.gateway.errors import documented_methods

PATHS = {
    "/v1/memories": {"get": {}, "post": {}, "delete": {}},
    "/v1/memories/export": {"get": {}},
    "/v1/memories/{memory_id}": {"get": {}, "delete": {}, "parameters": []},
}


def test_a_literal_path_offers_its_own_methods_only() -> None:
    assert documented_methods(PATHS, "/v1/memories/export") == {"GET"}


def test_a_template_matches_one_segment() -> None:
    assert documented_methods(PATHS, "/v1/memories/m1") == {"GET", "DELETE"}
    assert documented_methods(PATHS, "/v1/memories/m1/more") == set()
    assert documented_methods(PATHS, "/v1/elsewhere") == set()
