"""``pellucid serve``: a local web page to explore a model, fully offline.

FastAPI + uvicorn serve one static page (``pellucid/static``: HTML, two scripts, CSS, no build step, nothing
fetched from elsewhere, enforced by a Content-Security-Policy). The web framework is imported by this
package only; ``import pellucid`` never loads it.

- ``app``: :func:`create_app` (the routes put together), the page and results, :func:`serve`;
- ``jobs``: models with their replicas, images, results, cancellable jobs in a thread pool;
- ``uploads``: samples, uploads checked by content (through :func:`pellucid.io.decode_image`), predictions;
- ``analysis``: attribution overlays, the report, attacks and fooling images, from :mod:`pellucid.registry`;
- ``visualize``: class and channel visualizations streamed as NDJSON;
- ``datasets``: the data-set views, a class's strategies (SpRAy) and its concepts (CRAFT), on held-out images;
- ``views``: PNGs of images, overlays (:func:`pellucid.overlay.overlay_rgb`) and differences; top-5;
- ``security``: the Host check and the security headers.
"""

from .app import STATIC, create_app, serve
from .uploads import MAX_SIDE, MAX_UPLOAD_BYTES
from .views import image_png, overlay_png

__all__ = ["MAX_SIDE", "MAX_UPLOAD_BYTES", "STATIC", "create_app", "image_png", "overlay_png", "serve"]
