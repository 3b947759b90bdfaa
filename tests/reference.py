"""A slow, obviously-correct float64 reference of the loss, written from its published
definition (Sub-center ArcFace with the inter-top-k penalty; docs/loss.md states it).

All cosines in one product (each class's maximum over its K sub-centers), then a loop
over the batch that builds each full logit row, no tricks.
"""

import math

import torch


def mp_effective(mp: float, margin: float) -> float:
    return mp * margin / 0.2 if margin > 0.001 else 0.0


def reference_loss(
    x, weight, label, *, nclasses, K, scale, margin, easy_margin, mp, k_top
):
    """Mean cross-entropy in float64; differentiable with autograd in x and weight."""
    x = x.double()
    weight = weight.double()
    xn = x / x.norm(dim=1, keepdim=True)
    wn = weight / weight.norm(dim=1, keepdim=True)
    mpe = mp_effective(mp, margin)
    th = math.cos(math.pi - margin)
    # Row c*K + k of the weight is sub-center k of class c.
    cos_all = (xn @ wn.t()).view(x.shape[0], nclasses, K).amax(dim=2)
    losses = []
    for b in range(x.shape[0]):
        cos = cos_all[b]
        y = int(label[b])
        theta = torch.acos(cos.clamp(-1, 1))
        logits = cos.clone()
        if easy_margin:
            logits[y] = torch.cos(theta[y] + margin) if cos[y] > 0 else cos[y]
        else:
            logits[y] = (
                torch.cos(theta[y] + margin) if cos[y] > th else cos[y] - (1 + th)
            )
        others = [j for j in range(nclasses) if j != y]
        hard = sorted(others, key=lambda j: float(cos[j].detach()), reverse=True)[
            :k_top
        ]
        for j in hard:
            logits[j] = torch.cos(theta[j] - mpe)
        z = scale * logits
        losses.append(torch.logsumexp(z, 0) - z[y])
    return torch.stack(losses).mean()


def reference_predictions(loss, x):
    """Arg-max over classes of the plain cosine (maximum over sub-centers) in float64,
    the lowest class on ties."""
    xn = x.double() / x.double().norm(dim=1, keepdim=True)
    w = loss.weight.detach().double()
    wn = w / w.norm(dim=1, keepdim=True)
    cos = (xn @ wn.t()).view(x.shape[0], loss.out_features, loss.K).amax(dim=2)
    return torch.tensor(
        [max(range(row.numel()), key=lambda c: (float(row[c]), -c)) for row in cos]
    )
