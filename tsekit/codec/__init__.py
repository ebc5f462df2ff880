"""Neural audio codecs and mel vocoders (recipe stage 3): the registry and every implementation.

Importing the package registers every codec, as importing ``tsekit.models`` registers every system:
``encodec_codec`` and ``dac_codec`` the pretrained EnCodec and DAC (their packages are imported only when
built), ``toolkit`` and ``vocos`` the codec and vocoder the toolkit trains, ``pretrained_vocoders`` the published Vocos
and HiFi-GAN loaded from their checkpoint files.
"""

from tsekit.codec import dac_codec, encodec_codec, pretrained_vocoders, toolkit, vocos  # noqa: F401  (importing a module registers it)
