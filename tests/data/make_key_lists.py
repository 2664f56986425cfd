"""Writes the key/shape lists of the official weight files (``*_keys.json``) from published facts.

This script does not import pano360: each list is built from the architecture tables below, which
restate what the official files contain, so the tests compare the package's networks with an
independent description. Provenance per file:

- torchvision ``vgg16-397923af.pth``, ``vgg19-dcbb9e9d.pth``: ``features.<i>`` 3x3 convs at the
  indices of torchvision's configurations "D"/"E", ``classifier.{0,3,6}`` linear layers
  (25088→4096→4096→1000); 138,357,544 and 143,667,240 parameters.
- torchvision ``alexnet-owt-7be5be79.pth``: five convs at ``features.{0,3,6,8,10}``,
  ``classifier.{1,4,6}`` (9216→4096→4096→1000); 61,100,840 parameters.
- lpips v0.1 ``vgg.pth`` / ``alex.pth``: ``lin{k}.model.1.weight`` of shape [1, C_k, 1, 1]
  (``NetLinLayer`` = Dropout + bias-free 1x1 conv; lpips loads them with strict=False).
- pytorch-fid ``pt_inception-2015-12-05-6726825d.pth``: the TensorFlow graph's constants under the
  PyTorch names of torch-fidelity's published converter (``convert_tensorflow_graphdef_to_pytorch_
  checkpoint``): ``<block>.conv.weight`` (no bias), ``<block>.bn.{weight,bias,running_mean,
  running_var}`` (no ``num_batches_tracked``: the converter writes a plain dict without it),
  ``fc.weight`` [1008, 2048] and ``fc.bias`` [1008].
- PanFusion ``faed.ckpt``: Lightning checkpoint; ``state_dict`` keys ``net.encoder.*`` and
  ``net.decoder.*`` of ``models/faed/modules.py`` (Conv2d wrappers hold ``conv2d``; BatchNorm2d
  layers carry ``num_batches_tracked``).
"""

import json
from pathlib import Path

HERE = Path(__file__).parent


def conv(prefix, cout, cin, kh, kw=None, bias=True):
    kw = kh if kw is None else kw
    keys = {f"{prefix}.weight": [cout, cin, kh, kw]}
    if bias:
        keys[f"{prefix}.bias"] = [cout]
    return keys


def linear(prefix, cout, cin):
    return {f"{prefix}.weight": [cout, cin], f"{prefix}.bias": [cout]}


def vgg(config):
    keys, index, channels = {}, 0, 3
    for item in config:
        if item == "M":
            index += 1
        else:
            keys.update(conv(f"features.{index}", item, channels, 3))
            channels = item
            index += 2  # conv + relu
    keys.update(linear("classifier.0", 4096, 512 * 7 * 7))
    keys.update(linear("classifier.3", 4096, 4096))
    keys.update(linear("classifier.6", 1000, 4096))
    return keys


def alexnet():
    keys = {}
    for index, (cout, cin, k) in zip([0, 3, 6, 8, 10], [(64, 3, 11), (192, 64, 5), (384, 192, 3), (256, 384, 3), (256, 256, 3)]):
        keys.update(conv(f"features.{index}", cout, cin, k))
    keys.update(linear("classifier.1", 4096, 256 * 6 * 6))
    keys.update(linear("classifier.4", 4096, 4096))
    keys.update(linear("classifier.6", 1000, 4096))
    return keys


def lpips(channels):
    return {f"lin{k}.model.1.weight": [1, c, 1, 1] for k, c in enumerate(channels)}


def inception():
    # (module, in, out, kh, kw) for every BasicConv2d of the FID Inception graph.
    table = [
        ("Conv2d_1a_3x3", 3, 32, 3, 3), ("Conv2d_2a_3x3", 32, 32, 3, 3), ("Conv2d_2b_3x3", 32, 64, 3, 3),
        ("Conv2d_3b_1x1", 64, 80, 1, 1), ("Conv2d_4a_3x3", 80, 192, 3, 3),
    ]
    for name, cin, pool in [("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)]:
        table += [
            (f"{name}.branch1x1", cin, 64, 1, 1), (f"{name}.branch5x5_1", cin, 48, 1, 1),
            (f"{name}.branch5x5_2", 48, 64, 5, 5), (f"{name}.branch3x3dbl_1", cin, 64, 1, 1),
            (f"{name}.branch3x3dbl_2", 64, 96, 3, 3), (f"{name}.branch3x3dbl_3", 96, 96, 3, 3),
            (f"{name}.branch_pool", cin, pool, 1, 1),
        ]
    table += [
        ("Mixed_6a.branch3x3", 288, 384, 3, 3), ("Mixed_6a.branch3x3dbl_1", 288, 64, 1, 1),
        ("Mixed_6a.branch3x3dbl_2", 64, 96, 3, 3), ("Mixed_6a.branch3x3dbl_3", 96, 96, 3, 3),
    ]
    for name, c7 in [("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)]:
        table += [
            (f"{name}.branch1x1", 768, 192, 1, 1), (f"{name}.branch7x7_1", 768, c7, 1, 1),
            (f"{name}.branch7x7_2", c7, c7, 1, 7), (f"{name}.branch7x7_3", c7, 192, 7, 1),
            (f"{name}.branch7x7dbl_1", 768, c7, 1, 1), (f"{name}.branch7x7dbl_2", c7, c7, 7, 1),
            (f"{name}.branch7x7dbl_3", c7, c7, 1, 7), (f"{name}.branch7x7dbl_4", c7, c7, 7, 1),
            (f"{name}.branch7x7dbl_5", c7, 192, 1, 7), (f"{name}.branch_pool", 768, 192, 1, 1),
        ]
    table += [
        ("Mixed_7a.branch3x3_1", 768, 192, 1, 1), ("Mixed_7a.branch3x3_2", 192, 320, 3, 3),
        ("Mixed_7a.branch7x7x3_1", 768, 192, 1, 1), ("Mixed_7a.branch7x7x3_2", 192, 192, 1, 7),
        ("Mixed_7a.branch7x7x3_3", 192, 192, 7, 1), ("Mixed_7a.branch7x7x3_4", 192, 192, 3, 3),
    ]
    for name, cin in [("Mixed_7b", 1280), ("Mixed_7c", 2048)]:
        table += [
            (f"{name}.branch1x1", cin, 320, 1, 1), (f"{name}.branch3x3_1", cin, 384, 1, 1),
            (f"{name}.branch3x3_2a", 384, 384, 1, 3), (f"{name}.branch3x3_2b", 384, 384, 3, 1),
            (f"{name}.branch3x3dbl_1", cin, 448, 1, 1), (f"{name}.branch3x3dbl_2", 448, 384, 3, 3),
            (f"{name}.branch3x3dbl_3a", 384, 384, 1, 3), (f"{name}.branch3x3dbl_3b", 384, 384, 3, 1),
            (f"{name}.branch_pool", cin, 192, 1, 1),
        ]
    keys = {}
    for name, cin, cout, kh, kw in table:
        keys[f"{name}.conv.weight"] = [cout, cin, kh, kw]
        for stat in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{name}.bn.{stat}"] = [cout]
    keys.update(linear("fc", 1008, 2048))
    return keys


def faed():
    keys = {}

    def cconv(prefix, cin, cout, k):
        keys.update(conv(f"{prefix}.conv2d", cout, cin, k))

    def bn(prefix, c):
        keys.update({f"{prefix}.{s}": [c] for s in ("weight", "bias", "running_mean", "running_var")})
        keys[f"{prefix}.num_batches_tracked"] = []

    def convblock(prefix, cin, cout, k):
        cconv(f"{prefix}.conv1", cin, cout, k)
        bn(f"{prefix}.batchnorm1", cout)

    def resblock(prefix, c, k):
        cconv(f"{prefix}.conv1", c, c, k)
        bn(f"{prefix}.batchnorm1", c)
        cconv(f"{prefix}.conv2", c, c, k)
        bn(f"{prefix}.batchnorm2", c)

    e = "net.encoder"
    cconv(f"{e}.downconv1_rgb", 3, 32, 9)
    for i, (cin, cout) in zip(range(2, 7), [(32, 64), (64, 128), (128, 128), (128, 128), (128, 128)]):
        convblock(f"{e}.downconv{i}_rgb", cin, cout, 4)
    for i, (c, k) in zip(range(1, 6), [(32, 9), (64, 7), (128, 5), (128, 3), (128, 3)]):
        resblock(f"{e}.downres{i}_rgb", c, k)
    cconv(f"{e}.fuse", 128, 128, 3)
    d = "net.decoder"
    for i, (cin, cout) in zip(range(2, 6), [(128, 128), (128, 128), (128, 64), (64, 32)]):
        convblock(f"{d}.upconv{i}_rgb", cin, cout, 3)
    cconv(f"{d}.outconv_rgb", 32, 3, 9)
    for i, (c, k) in zip(range(2, 6), [(128, 3), (128, 5), (64, 7), (32, 9)]):
        resblock(f"{d}.upres{i}_rgb", c, k)
    return keys


def count(keys):
    total = 0
    for shape in keys.values():
        n = 1
        for s in shape:
            n *= s
        total += n
    return total


FILES = {
    "vgg16-397923af.pth": vgg([64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]),
    "vgg19-dcbb9e9d.pth": vgg([64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                               512, 512, 512, 512, "M"]),
    "alexnet-owt-7be5be79.pth": alexnet(),
    "lpips-v0.1-vgg.pth": lpips([64, 128, 256, 512, 512]),
    "lpips-v0.1-alex.pth": lpips([64, 192, 384, 256, 256]),
    "pt_inception-2015-12-05-6726825d.pth": inception(),
    "faed.ckpt-state_dict": faed(),
}

if __name__ == "__main__":
    assert count(FILES["vgg16-397923af.pth"]) == 138_357_544
    assert count(FILES["vgg19-dcbb9e9d.pth"]) == 143_667_240
    assert count(FILES["alexnet-owt-7be5be79.pth"]) == 61_100_840
    for name, keys in FILES.items():
        path = HERE / ("keys_" + name.replace(".pth", "").replace(".ckpt-state_dict", "_ckpt") + ".json")
        path.write_text(json.dumps({"file": name, "keys": keys}, indent=1) + "\n", encoding="utf-8")
        print(path.name, len(keys), count(keys))
