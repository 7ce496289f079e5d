"""Each objective written plainly from the HF model's own logits and hidden states.

Independent of fastunlearn: the objective tests compare losses and gradients with these.
"""

from types import SimpleNamespace

import torch
import torch.nn.functional as F


def forward(model, batch, **kwargs):
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **kwargs)


def response_token_nll(logits, batch):
    """[B, T-1] NLL of each next token, 0 outside the response."""
    targets = batch.input_ids[:, 1:]
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), targets, reduction="none")
    return nll * batch.response_mask[:, 1:]


def mean_response_nll(model, batch, opening_tokens=0, opening_weight=1.0):
    """Mean over sequences of the mean NLL over each sequence's response tokens, the first
    opening_tokens of them weighing opening_weight times the others."""
    nll = response_token_nll(forward(model, batch).logits, batch)
    weights = batch.response_mask[:, 1:].float()
    for row in range(len(weights)):
        targets = weights[row].nonzero().flatten()[:opening_tokens]
        weights[row, targets] = opening_weight
    return ((weights * nll).sum(1) / weights.sum(1)).mean()


def response_logprob(model, batch):
    return -response_token_nll(forward(model, batch).logits, batch).sum(1)


def npo(model, reference_logprob, batch, beta):
    log_ratio = response_logprob(model, batch) - reference_logprob
    return -(2 / beta) * F.logsigmoid(-beta * log_ratio).mean()


def retain_kl(model, reference_logits, batch):
    """KL(reference || model) of next-token distributions, averaged over non-padding tokens."""
    log_p = forward(model, batch).logits.log_softmax(-1)
    kl = F.kl_div(log_p, reference_logits.log_softmax(-1), log_target=True, reduction="none").sum(
        -1
    )
    real = batch.attention_mask.bool()
    return kl[real].mean()


def weighted_pool(hidden, mask):
    m = mask.float()
    weights = m * m.cumsum(1)  # 1, 2, 3, ... over the masked-in tokens
    return (weights[..., None] * hidden).sum(1) / weights.sum(1, keepdim=True)


def wpn(
    model,
    batch,
    temperature,
    similarity="cosine",
    layer=-1,
    candidate_span="response",
    positive_nll_weight=0.0,
    npair_weight=1.0,
    opening_tokens=0,
    opening_weight=1.0,
    negative_unlikelihood_weight=0.0,
):
    hidden = forward(model, batch, output_hidden_states=True).hidden_states[layer]
    k = batch.num_candidates
    anchors = torch.stack(
        [
            weighted_pool(hidden[i : i + 1], batch.prompt_mask[i : i + 1])[0]
            for i in range(0, len(hidden), k)
        ]
    )
    span = (
        batch.response_mask
        if candidate_span == "response"
        else batch.response_mask | batch.prompt_mask
    )
    candidates = weighted_pool(hidden, span).view(len(anchors), k, -1)
    if similarity == "cosine":
        logits = F.cosine_similarity(anchors[:, None], candidates, dim=-1) / temperature
    else:
        logits = (anchors[:, None] * candidates).sum(-1) / temperature
    if batch.candidate_mask is not None:
        logits = logits.masked_fill(~batch.candidate_mask, float("-inf"))
    npair = F.cross_entropy(logits, torch.zeros(len(anchors), dtype=torch.long))
    loss = npair_weight * npair
    if negative_unlikelihood_weight:
        loss = loss + negative_unlikelihood_weight * negative_unlikelihood(
            model, batch, opening_tokens
        )
    if not positive_nll_weight:
        return loss
    positives = SimpleNamespace(
        input_ids=batch.input_ids[::k],
        attention_mask=batch.attention_mask[::k],
        response_mask=batch.response_mask[::k],
    )
    return loss + positive_nll_weight * mean_response_nll(
        model, positives, opening_tokens, opening_weight
    )


def negative_unlikelihood(model, batch, opening_tokens):
    """Mean over the negatives (candidate_mask) of the mean of -log(1 - p) over the first
    opening_tokens targets of each response."""
    probabilities = forward(model, batch).logits[:, :-1].softmax(-1)
    p = probabilities.gather(-1, batch.input_ids[:, 1:, None])[..., 0]
    k = batch.num_candidates
    kept = [
        row
        for row in range(len(p))
        if row % k and (batch.candidate_mask is None or batch.candidate_mask.view(-1)[row])
    ]
    means = []
    for row in kept:
        targets = batch.response_mask[row, 1:].nonzero().flatten()[:opening_tokens]
        means.append(-torch.log1p(-p[row, targets]).mean())
    return torch.stack(means).mean()


def hidden_states(model, batch):
    """HF's hidden-state tuple: the embedding output, then one entry per block."""
    return forward(model, batch, output_hidden_states=True).hidden_states


def rr(model, reference_states, forget, retain, layers, reroute_weight, hold_weight):
    """Circuit-breaker rerouting, token by token: ReLU(cosine) with the reference on forget
    response tokens + L2 distance to the reference on real retain tokens, each a mean over
    (layer, token) pairs. ``reference_states``: the reference's hidden_states of forget and
    of retain."""
    reference_forget, reference_retain = reference_states
    states, retain_states = hidden_states(model, forget), hidden_states(model, retain)
    reroute = [
        F.relu(F.cosine_similarity(states[layer][b, t], reference_forget[layer][b, t], dim=0))
        for layer in layers
        for b, t in forget.response_mask.nonzero()
    ]
    hold = [
        (retain_states[layer][b, t] - reference_retain[layer][b, t]).norm()
        for layer in layers
        for b, t in retain.attention_mask.nonzero()
    ]
    return reroute_weight * torch.stack(reroute).mean() + hold_weight * torch.stack(hold).mean()
