"""Networks used to measure images, rebuilt in torch so they load the official weight files by key name.

- :mod:`.lpips`: LPIPS v0.1 (VGG16 / AlexNet trunks): ``LPIPS(net="vgg", weights_dir=None, pretrained=True)``
- :mod:`.inception`: the FID InceptionV3 (TensorFlow 2015-12-05 graph, pytorch-fid / torch-fidelity port)
- :mod:`.vgg`: torchvision-compatible VGG16 / VGG19 / AlexNet trunks
- :mod:`.faed`: PanFusion's panorama autoencoder (FAED)
- :mod:`.clip`: transformers' CLIP with its processor, plus a tiny random CLIP for tests
- :mod:`.weights`: ``fetch_weights(name, weights_dir=None)``: official URLs, cache, checksums, offline folder

This package sits beside the backbones: it imports only torch, numpy and :mod:`pano360.errors`, never the
metrics or anything above them.
"""
