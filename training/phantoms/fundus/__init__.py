"""PhantomFundus: synthetic colour fundus photographs with free-text reports and exact lesion locations.

Modelled on PhantomCXR (:mod:`training.phantoms`) and written in its file formats; see ``README.md`` here.
Directions are ophthalmic: on a RIGHT eye (OD) the optic disc (nasal) is on the image's right.
"""
