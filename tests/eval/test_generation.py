import pytest

from fastunlearn.data.tokenization import PLAIN_PROMPT_TEMPLATE, prompt_ids
from fastunlearn.eval import generate_responses
from tests.eval.conftest import fixed_reply_model, tiny_causal_lm

PROMPTS = [
    "What is the capital of France?",
    "Tell me a story about a dragon.",
    "How do I bake bread?",
]


def test_chat_template_prompt(chat_tokenizer):
    ids = prompt_ids(chat_tokenizer, "Hi")
    expected = chat_tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat_tokenizer.decode(ids) == expected


def test_plain_template_prompt(opt_tokenizer):
    ids = prompt_ids(opt_tokenizer, "Hi")
    assert ids == opt_tokenizer(PLAIN_PROMPT_TEMPLATE.format(prompt="Hi"))["input_ids"]
    assert ids[0] == opt_tokenizer.bos_token_id


@pytest.mark.parametrize(
    "model_type, tokenizer_fixture", [("llama", "chat_tokenizer"), ("opt", "opt_tokenizer")]
)
def test_batched_left_padded_generation_matches_one_by_one(model_type, tokenizer_fixture, request):
    tokenizer = request.getfixturevalue(tokenizer_fixture)
    model = tiny_causal_lm(model_type, tokenizer)
    padding_side, pad_token = tokenizer.padding_side, tokenizer.pad_token
    batched = generate_responses(model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=3)
    one_by_one = [
        generate_responses(model, tokenizer, [prompt], max_new_tokens=6)[0] for prompt in PROMPTS
    ]
    assert batched == one_by_one
    assert all(isinstance(response, str) for response in batched)
    # Greedy: the same answers again.
    assert generate_responses(model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=2) == batched
    assert (tokenizer.padding_side, tokenizer.pad_token) == (padding_side, pad_token)


def test_new_tokens_only_capped_at_max_new_tokens(tiny_llama, chat_tokenizer):
    reply = "Paris is the capital of France."
    model = fixed_reply_model(tiny_llama, chat_tokenizer, reply)
    assert generate_responses(model, chat_tokenizer, PROMPTS, max_new_tokens=100) == [reply] * 3
    reply_ids = chat_tokenizer(reply, add_special_tokens=False)["input_ids"]
    short = chat_tokenizer.decode(reply_ids[:3]).strip()
    assert generate_responses(model, chat_tokenizer, PROMPTS[:1], max_new_tokens=3) == [short]


def test_greedy_config_stops_at_the_end_of_turn(tiny_llama, chat_tokenizer):
    model = fixed_reply_model(tiny_llama, chat_tokenizer, "Sure.")
    tiny_llama.generation_config.do_sample = True  # settings shipped with a model must not leak in
    try:
        generate_responses(model, chat_tokenizer, PROMPTS, max_new_tokens=7)
    finally:
        tiny_llama.generation_config.do_sample = False
    config = model.last_generation_config
    assert (config.do_sample, config.num_beams, config.max_new_tokens) == (False, 1, 7)
    assert chat_tokenizer.eos_token_id in config.eos_token_id
    assert config.pad_token_id == chat_tokenizer.pad_token_id


def test_bad_arguments(tiny_llama, chat_tokenizer):
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_responses(tiny_llama, chat_tokenizer, PROMPTS, max_new_tokens=0)
    with pytest.raises(ValueError, match="batch_size"):
        generate_responses(tiny_llama, chat_tokenizer, PROMPTS, batch_size=0)
