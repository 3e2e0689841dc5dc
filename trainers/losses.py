"""The objectives: DPO / cDPO (fixed or per-pair ε), SimPO, optional α·NLL on the chosen response, and SFT.

Everything starts from per-token log-probs of the scored positions and two 0/1 masks that say which
positions belong to the chosen and to the rejected response (see `trainers.data`). Masks, not slicing, make
the same code serve the two-sequence layout (2B rows), prefix sharing (B rows, the shared-prefix span scored
for both responses) and SFT (B rows, chosen only).

- cDPO (Mitchell 2023; MCTS-DPO uses a per-pair ε = min(1 - c, 0.5)):
  L = -(1-ε) log σ(βh) - ε log σ(-βh),  h = [log π(y_w) - log π_ref(y_w)] - [log π(y_l) - log π_ref(y_l)].
  ε = 0 is plain sigmoid DPO (TRL `loss_type="sigmoid"`).
- SimPO (Meng et al. 2024): z = β/|y_w| log π(y_w) - β/|y_l| log π(y_l) - γ, no reference; the same
  ε-smoothing applies (as in TRL's CPO trainer).
- NLL: mean per-token negative log-likelihood over the chosen response's scored tokens, averaged over all
  such tokens in the batch (the standard causal-LM reduction). With masking the scored tokens are the
  chosen suffix; without masking the shared prefix + suffix, i.e. the whole chosen response after the chat
  prompt, so the joint objective then is exactly "DPO + SFT on the chosen response".
- Joint (Marco-o1 v2 §1.11): L = L_pref + α · NLL(chosen), α = 1 in the paper.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F


def token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target_t | ...) at every position, in float32 whatever the model dtype."""
    logits = logits.float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


@dataclasses.dataclass
class Logps:
    """Summed log-probs and scored-token counts per pair."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor


def sequence_logps(per_token: torch.Tensor, chosen_mask: torch.Tensor, rejected_mask: torch.Tensor,
                   num_pairs: int) -> Logps:
    """Sum each response's scored positions and fold the rows of a pair together.

    Rows are [chosen rows; rejected rows] (two-sequence) or one row per pair (prefix sharing, SFT): in both
    cases `view(-1, B).sum(0)` adds up the rows that belong to pair b, whose masks are zero elsewhere.
    """
    def fold(x: torch.Tensor) -> torch.Tensor:
        return x.sum(-1).view(-1, num_pairs).sum(0)

    return Logps(fold(per_token * chosen_mask), fold(per_token * rejected_mask), fold(chosen_mask),
                 fold(rejected_mask))


def label_smoothed(z: torch.Tensor, epsilon: torch.Tensor) -> torch.Tensor:
    """-(1-ε) log σ(z) - ε log σ(-z), per pair (ε per pair or a broadcast scalar)."""
    return -(1 - epsilon) * F.logsigmoid(z) - epsilon * F.logsigmoid(-z)


def dpo(policy: Logps, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, beta: float,
        epsilon: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair cDPO loss and the implicit rewards β·log(π/π_ref) of both responses."""
    chosen_rewards = beta * (policy.chosen - ref_chosen.to(policy.chosen.dtype))
    rejected_rewards = beta * (policy.rejected - ref_rejected.to(policy.rejected.dtype))
    return label_smoothed(chosen_rewards - rejected_rewards, epsilon), chosen_rewards, rejected_rewards


def simpo(policy: Logps, beta: float, gamma: float,
          epsilon: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair SimPO loss and its rewards β·(average log-prob)."""
    chosen_rewards = beta * policy.chosen / policy.chosen_tokens.clamp(min=1)
    rejected_rewards = beta * policy.rejected / policy.rejected_tokens.clamp(min=1)
    return label_smoothed(chosen_rewards - rejected_rewards - gamma, epsilon), chosen_rewards, rejected_rewards


def nll(per_token: torch.Tensor, chosen_mask: torch.Tensor) -> torch.Tensor:
    """Mean per-token NLL over every scored chosen token of the batch."""
    return -(per_token * chosen_mask).sum() / chosen_mask.sum().clamp(min=1)


@dataclasses.dataclass
class LossSettings:
    objective: str  # dpo | cdpo | simpo | sft
    beta: float = 0.1
    alpha: float = 0.0
    simpo_gamma: float = 0.5


def compute(settings: LossSettings, per_token: torch.Tensor, batch: dict,
            ref: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The total loss and detached metrics for one batch.

    `ref` = (ref_chosen, ref_rejected) summed reference log-probs per pair, needed by dpo / cdpo only.
    """
    chosen_mask, rejected_mask = batch["chosen_mask"], batch["rejected_mask"]
    nll_value = nll(per_token, chosen_mask)
    metrics = {"nll": nll_value.detach()}
    if settings.objective == "sft":
        return nll_value, metrics

    epsilon = batch["epsilon"].to(per_token.dtype)
    if settings.objective == "dpo":
        epsilon = torch.zeros_like(epsilon)
    policy = sequence_logps(per_token, chosen_mask, rejected_mask, num_pairs=epsilon.shape[0])
    if settings.objective == "simpo":
        pair_loss, chosen_r, rejected_r = simpo(policy, settings.beta, settings.simpo_gamma, epsilon)
    else:
        pair_loss, chosen_r, rejected_r = dpo(policy, ref[0], ref[1], settings.beta, epsilon)
    pref = pair_loss.mean()
    loss = pref + settings.alpha * nll_value if settings.alpha else pref
    metrics.update({
        "loss/pref": pref.detach(), "loss/nll": (settings.alpha * nll_value).detach(),
        "rewards/chosen": chosen_r.detach().mean(), "rewards/rejected": rejected_r.detach().mean(),
        "rewards/margins": (chosen_r - rejected_r).detach().mean(),
        "rewards/accuracies": (chosen_r > rejected_r).float().mean(),
        "logps/chosen": policy.chosen.detach().mean(), "logps/rejected": policy.rejected.detach().mean(),
        "epsilon": epsilon.mean(),
    })
    return loss, metrics
