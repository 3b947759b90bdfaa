"""A slow, obviously-correct float64 reference of the loss, written from its published
definition (Sub-center ArcFace with the inter-top-k penalty; the README states it).

Loops over the batch, builds the full logit row, no tricks.
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
    losses = []
    for b in range(x.shape[0]):
        cos = torch.stack(
            [
                torch.stack([xn[b] @ wn[c * K + k] for k in range(K)]).max()
                for c in range(nclasses)
            ]
        )
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
    preds = []
    for b in range(x.shape[0]):
        cos = [
            max(float(xn[b] @ wn[c * loss.K + k]) for k in range(loss.K))
            for c in range(loss.out_features)
        ]
        preds.append(max(range(len(cos)), key=lambda c: (cos[c], -c)))
    return torch.tensor(preds)
