"""The AWS IoT Greengrass v2 component: recipes and artifacts (``build``), the runtime the nucleus starts
(``service``, over IPC: ``ipc``), a local stand-in for the nucleus (``local``, ``devserver``). Never imports
``compile/``."""

COMPONENT = "com.edgecv.Counter"
PUBLISH_TARGETS = ("iotcore", "local", "mqtt")
