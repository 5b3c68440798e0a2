"""interapp: across-application network communication (after US 9,451,014).

Parts: ``server`` (an application's side), ``host`` and ``vault`` (the local application's plug-in
runtime and link store), ``plugins`` (one per kind of opposite application), ``cli`` and ``web``
(the faces), ``testing`` (the plug-in conformance kit).
"""

__version__ = "0.1.0"
