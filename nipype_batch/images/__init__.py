"""Job images: which image each node needs, and getting it built, published and checked.

Modules, lowest layer first; a module imports only modules of lower layers
(``tests/test_images_layers.py`` keeps it so):

1. ``docker`` (the Docker daemon, and asking an image a question), ``registries`` (where
   images are pushed), ``wheels`` (requirements and wheels on the driver), ``dependencies``
   (what a node's pickle needs);
2. ``build``: an image's recipe, content tag and offline build;
3. ``plan`` (which image each node runs in), ``publish`` (found in the registry, or built and
   pushed), ``load_check`` (ready images probed, each kind of node loaded in its image).
"""
