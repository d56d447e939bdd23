"""The tiny models' tokenizer: a byte-level BPE trained here, deterministically, on a fixed corpus embedded in
this module, given Qwen's special tokens in Qwen's order and Qwen2's pre-tokenizer and chat template."""

from __future__ import annotations

# ----------------------------------------------------------------------------------------------------------
# Qwen2 / Qwen2-Audio constants

# Qwen2's pre-tokenizer split (transformers/models/qwen2/tokenization_qwen2.py, PRETOKENIZE_REGEX).
QWEN2_PRETOKENIZE_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
AUDIO_TOKEN = "<|AUDIO|>"
AUDIO_BOS = "<|audio_bos|>"
AUDIO_EOS = "<|audio_eos|>"
# Same order as the real tokenizer (ids 151643..151648 there), appended after the BPE vocabulary here.
SPECIAL_TOKENS: tuple[str, ...] = (ENDOFTEXT, IM_START, IM_END, AUDIO_TOKEN, AUDIO_BOS, AUDIO_EOS)
EXTRA_SPECIAL_TOKENS: tuple[str, ...] = (IM_START, IM_END, AUDIO_TOKEN, AUDIO_BOS, AUDIO_EOS)

# Qwen2-Instruct's ChatML template, which the Qwen2-Audio tokenizer carries (text-only contents).
QWEN2_CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

BPE_VOCAB_SIZE = 2048  # byte-level BPE entries before the special tokens


# ----------------------------------------------------------------------------------------------------------
# Fixed training corpus for the tokenizer: common English, SLURP-like commands, JSON, chat scaffolding.

_COMMON_WORDS = """
the be to of and a in that have i it for not on with he as you do at this but his by from they we say her
she or an will my one all would there their what so up out if about who get which go me when make can like
time no just him know take people into year your good some could them see other than then now look only come
its over think also back after use two how our work first well way even new want because any these give day
most us is are was were been being has had did does done said says made makes going went gone got getting
very really much many more less few little big small large long short high low old young early late next last
right left same different important public able bad best better sure free full special clear whole real hard
easy open close closed light dark hot cold warm cool wet dry loud quiet slow fast quick soft strong weak happy
sad tired hungry thirsty busy ready please thanks thank hello hi hey goodbye bye yes yeah okay ok sorry excuse
morning afternoon evening night today tonight tomorrow yesterday week weekend month hour hours minute minutes
second seconds now later soon before after during while until since ago always never often sometimes usually
monday tuesday wednesday thursday friday saturday sunday january february march april may june july august
september october november december spring summer autumn fall winter
zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen
seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million
first second third fourth fifth sixth seventh eighth ninth tenth half quarter o'clock am pm noon midnight
man woman child children boy girl friend friends family mother father mom dad sister brother wife husband son
daughter baby people person team boss doctor teacher student customer neighbour neighbor
house home room kitchen bedroom bathroom living office garage garden door window wall floor table chair bed
car bus train plane taxi bike bicycle road street station airport city town country world place way
water food coffee tea milk juice beer wine bread rice pasta pizza burger chicken fish beef soup salad cake
breakfast lunch dinner meal recipe cook cooking bake boil fry grill oven fridge
phone email message text call number list note notes reminder reminders alarm alarms timer clock calendar
meeting meetings appointment event events birthday party holiday trip flight ticket tickets hotel booking
weather rain raining rainy snow snowing sunny cloudy wind windy storm temperature degrees forecast umbrella
music song songs album artist band playlist radio podcast podcasts volume sound audio speaker headphones
news sports football soccer basketball tennis game games score match movie movies film show shows series
lights lamp light bulb plug socket heater heating thermostat fan vacuum cleaner robot curtains blinds
speech voice word words sentence question answer name names language english spanish french german
""".split()

_COMMAND_VERBS = """
set wake remind tell play pause stop resume skip repeat shuffle turn switch dim brighten increase decrease
raise lower mute unmute cancel delete remove add create send read check find search show open close order
book call text reply forward schedule move change update start begin end finish lock unlock clean charge
describe transcribe translate summarize classify identify recognize detect listen hear speak understand
""".split()

_SLURP_SCENARIOS = """
alarm audio calendar cooking datetime email general iot lists music news play qa recommendation social
takeaway transport weather
""".split()

_SLURP_INTENTS = """
set query remove volume_mute volume_up volume_down volume_other hue_lightoff hue_lightup hue_lightdim
hue_lightchange hue_lighton coffee wemo_on wemo_off cleaning quirky factoid definition maths currency stock
podcasts radio audiobook game music likeness dislikeness settings convert recipe traffic ticket taxi
createoradd addcontact sendemail querycontact post ticket order negate affirm explain praise greet joke
""".split()

_SLURP_ENTITIES = """
time date place_name person event_name device_type business_name media_type food_type house_place
weather_descriptor timeofday relation list_name artist_name song_name playlist_name radio_name
podcast_name podcast_descriptor transport_type transport_name news_topic music_genre color_type
change_amount definition_word currency_name general_frequency app_name email_address personal_info
meal_type drink_type cooking_type player_setting movie_name game_name order_type business_type
""".split()

_NAMES_AND_PLACES = """
john mary james anna david sarah michael emma robert olivia peter lisa paul kate tom jane alex chris
london paris berlin madrid rome tokyo beijing new york boston chicago seattle sydney dublin edinburgh
amazon google spotify netflix youtube facebook twitter whatsapp uber starbucks mcdonalds
beatles queen adele beyonce coldplay madonna mozart beethoven jazz rock pop classical hip hop country
""".split()

_SENTENCES = """
wake me up at eight o'clock tomorrow morning
set an alarm for seven am on monday
cancel my alarm for six thirty
what alarms do i have set for this week
remind me to call my mother at five pm
what is the weather like in london today
will it rain tomorrow in paris
do i need an umbrella this afternoon
how hot will it be on saturday
turn off the lights in the kitchen
dim the living room lights to fifty percent
change the bedroom lights to blue
turn on the coffee machine
start the robot vacuum cleaner
play some jazz music
play the next song on my playlist
skip this song
turn the volume up a little
mute the speaker for ten minutes
play the latest episode of my favourite podcast
what's the latest news about football
tell me the news headlines from the bbc
add milk and eggs to my shopping list
remove bread from the grocery list
what is on my to do list
create a new list called holiday packing
schedule a meeting with john on friday at three
what meetings do i have tomorrow
when is my next appointment with the doctor
delete the event on thursday evening
send an email to sarah about the party
do i have any new emails from my boss
read my latest messages
what time is it in tokyo
what's the date next wednesday
how many days until christmas
how do i make a chocolate cake
give me a recipe for chicken soup
order a large pizza from the usual place
is the chinese takeaway still open
book a taxi to the airport for six am
when is the next train to edinburgh
how is the traffic on the way to work
tell me a joke
what is the capital of france
how far is the moon from the earth
what does the word serendipity mean
convert ten dollars to euros
how are you doing today
thank you that was very helpful
i don't like this song
recommend a good restaurant nearby
post on facebook that i'm on holiday
you are a helpful assistant
what is this
what is this sound
what does the person say
transcribe the audio
transcribe the speech into text
describe the audio in detail
classify the intent of the spoken command
extract the scenario action and entities as json
what's that sound
it is the sound of glass shattering
the speaker is female and in her twenties
detect the language and translate to english
""".strip().splitlines()

_JSON_SNIPPETS = [
    '{"scenario": "alarm", "action": "set", "entities": [{"type": "time", "filler": "eight am"}]}',
    '{"scenario": "alarm", "entities": [{"time": "eight o\'clock"}]}',
    '{"scenario": "weather", "action": "query", "entities": [{"type": "place_name", "filler": "london"},'
    ' {"type": "date", "filler": "today"}]}',
    '{"scenario": "iot", "action": "hue_lightoff", "entities": [{"type": "house_place", "filler": "kitchen"}]}',
    '{"scenario": "music", "action": "play", "entities": []}',
    '{"intent": "calendar_set", "slots": {"person": "john", "date": "friday", "time": "three"}}',
    '{"text": "wake me up at eight", "label": 0, "score": 0.95, "ok": true, "none": null}',
    '[{"id": 1}, {"id": 2}, {"id": 3}]',
    '{"a": [1, 2, 3], "b": {"c": "d"}, "e": -1.5e3}',
    "{'scenario': 'alarm', 'action': 'set'}",
    '```json\n{"key": "value"}\n```',
]

_MISC_TEXT = [
    "Audio 1: Audio 2: Audio 3:",
    "User: Assistant: System:",
    "Hello, World! How are you? I'm fine; thanks. It's 7:30 a.m. (GMT+1) - really?",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 20 30 45 50 99 100 2024 2025 3.14 1,000 50% $5 #1 @home a+b=c x*y/z <tag>",
    "def main():\n    return {'ok': True}\n\n",
    "café naïve résumé über Straße niño 東京 北京 こんにちは 안녕하세요 привет مرحبا 😀 ✓ →",
    "\t\ttabs  double  spaces\r\nwindows line\n\n\nblank lines",
]


def _tokenizer_corpus() -> list[str]:
    """The fixed training corpus (order matters only for reproducibility of the file, not of the merges)."""
    lines: list[str] = []
    lines += _SENTENCES
    lines += [s.capitalize() + "." for s in _SENTENCES]
    lines += [
        s.capitalize() + "?"
        for s in _SENTENCES
        if s.split()[0] in {"what", "how", "when", "is", "do", "will"}
    ]
    lines += _JSON_SNIPPETS
    lines += _MISC_TEXT
    vocab_words = (
        _COMMON_WORDS
        + _COMMAND_VERBS
        + _SLURP_SCENARIOS
        + _SLURP_INTENTS
        + _SLURP_ENTITIES
        + _NAMES_AND_PLACES
    )
    lines.append(" ".join(vocab_words))
    lines.append(" ".join(w.capitalize() for w in vocab_words))
    lines += [f'"{w}": "{w}",' for w in _SLURP_SCENARIOS + _SLURP_ENTITIES]
    lines += [f"{s}_{i}" for s in _SLURP_SCENARIOS for i in _SLURP_INTENTS[:6]]
    return lines


# ----------------------------------------------------------------------------------------------------------
# Tokenizer


def train_bpe(vocab_size: int = BPE_VOCAB_SIZE):
    """Byte-level BPE with Qwen2's pipeline (NFC, regex split + ByteLevel, ByteLevel decoder)."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    tok = Tokenizer(
        BPE(
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
            dropout=None,
        )
    )
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    return tok


def build_tiny_tokenizer(
    vocab_size: int = BPE_VOCAB_SIZE,
    chat_template: str | None = QWEN2_CHATML_TEMPLATE,
    special_tokens: tuple[str, ...] = SPECIAL_TOKENS,
    added_tokens: tuple[str, ...] = (),
    model_max_length: int = 32768,
):
    """Train the tiny byte-level BPE and wrap it as ``Qwen2Tokenizer`` with Qwen's special tokens.

    ``<|endoftext|>`` is the pad token, ``<|im_end|>`` the eos (as the Instruct checkpoints), no bos/unk;
    the other specials are extra special tokens, so ``skip_special_tokens=True`` drops them all.
    ``added_tokens`` follow the specials as ordinary added tokens (Qwen3's ``<think>``, ``<tool_call>``...),
    which decoding keeps. Defaults: Qwen2-Audio-Instruct's specials and its text-only ChatML template
    (the audio template is the processor's).
    """
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    backend = train_bpe(vocab_size)
    n_bpe = backend.get_vocab_size()
    # Added in Qwen's order so the ids follow the BPE entries, as 151643.. follow Qwen2's 151643 BPE entries.
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special_tokens])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in added_tokens])
    tokenizer = Qwen2Tokenizer(
        tokenizer_object=backend,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        unk_token=None,
        bos_token=None,
        extra_special_tokens=[t for t in special_tokens if t != ENDOFTEXT],
        chat_template=chat_template,
        model_max_length=model_max_length,
        errors="replace",
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    expected = list(special_tokens + added_tokens)
    ids = tokenizer.convert_tokens_to_ids(expected)
    if ids != list(range(n_bpe, n_bpe + len(expected))):
        raise RuntimeError(f"added token ids {ids} are not {n_bpe}..{n_bpe + len(expected) - 1}")
    return tokenizer
