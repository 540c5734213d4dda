"""A spatial index over a nuScenes map expansion's polygon layers.

The devkit's `NuScenesMap.get_records_in_patch` tests every record of a layer against the patch and rebuilds
each record's polygon from its nodes on every call: on the synthetic map that is 0.28 s a query and three quarters
of a clip's geometry time; real maps hold many more records. `MapIndex` builds each polygon once, keeps a
`shapely.STRtree` per layer, and answers the same queries with the same tokens in the same order:

- `records_in_patch(box, layers)` ≡ `get_records_in_patch(box, layers, mode="intersect")` (GEOS `intersects`
  on the same geometries; drivable areas as the MultiPolygon of their polygons, as the devkit builds them);
- `closest_lane(x, y, radius)` ≡ `get_closest_lane(x, y, radius)`: lanes then lane connectors intersecting the
  square patch, each discretised at 0.5 m (once per lane here), the nearest with the devkit's tie rule (`<=`:
  the last of equals wins).

`tests/test_loader.py` checks both against the devkit on every query a clip makes.
"""
from __future__ import annotations

import numpy as np
import shapely
from shapely.geometry import MultiPolygon

LAYERS = ("drivable_area", "lane", "lane_connector", "road_segment")


class MapIndex:
    def __init__(self, nmap, polygon=None, layers=LAYERS):
        self.nmap = nmap
        polygon = polygon or nmap.extract_polygon
        self._layers: dict[str, tuple[list[str], shapely.STRtree]] = {}
        for layer in layers:
            records = getattr(nmap, layer)
            if layer == "drivable_area":
                geoms = [MultiPolygon([polygon(t) for t in r["polygon_tokens"]]) for r in records]
            else:
                geoms = [polygon(r["polygon_token"]) for r in records]
            self._layers[layer] = ([r["token"] for r in records], shapely.STRtree(geoms))
        self._points: dict[str, np.ndarray] = {}

    def records_in_patch(self, box_coords, layer_names) -> dict[str, list[str]]:
        """Tokens of each layer's records whose polygon intersects the box (x_min, y_min, x_max, y_max), in map
        order."""
        patch = shapely.box(*box_coords)
        out = {}
        for layer in layer_names:
            tokens, tree = self._layers[layer]
            out[layer] = [tokens[i] for i in np.sort(tree.query(patch, predicate="intersects"))]
        return out

    def lane_points(self, token: str) -> np.ndarray:
        """(N, 2) the lane's arcline path discretised at 0.5 m (the devkit's `discretize_lanes`), cached."""
        from nuscenes.map_expansion.arcline_path_utils import discretize_lane

        if token not in self._points:
            pts = np.array(discretize_lane(self.nmap.arcline_path_3.get(token, []), resolution_meters=0.5))
            self._points[token] = pts[:, :2] if pts.ndim == 2 else np.zeros((0, 2))
        return self._points[token]

    def closest_lane(self, x: float, y: float, radius: float = 5.0) -> str:
        """The devkit's `get_closest_lane`: "" when no lane or connector is near."""
        near = self.records_in_patch((x - radius, y - radius, x + radius, y + radius), ("lane", "lane_connector"))
        best, best_d = "", np.inf
        for token in dict.fromkeys(near["lane"] + near["lane_connector"]):
            pts = self.lane_points(token)
            if not len(pts):  # no arcline path (the devkit fails on these)
                continue
            d = float(np.linalg.norm(pts - [x, y], axis=1).min())
            if d <= best_d:
                best, best_d = token, d
        return best
