"""Neural audio codecs and mel vocoders (recipe stage 3): the lookup by name, the toolkit's own, their training.

Importing the package registers every codec, as importing ``tsekit.models`` registers every system:
``toolkit`` and ``vocos`` the codec and vocoder the toolkit trains, and from ``tsekit.pretrained`` the published ones
(``encodec_codec`` and ``dac_codec`` the pretrained EnCodec and DAC, their packages imported only when built;
``vocoders`` the published Vocos and HiFi-GAN loaded from their checkpoint files).
"""

from tsekit.codec import toolkit, vocos  # noqa: F401  (importing a module registers it)
from tsekit.pretrained import dac_codec, encodec_codec, vocoders  # noqa: F401  (importing a module registers it)
