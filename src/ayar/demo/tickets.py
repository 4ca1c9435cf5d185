"""Synthetic Turkish customer-support tickets full of (fake) personal data, for the demo.

Each record is an OpenAI-messages conversation: a customer writes about a
problem and, on the way, gives a T.C. Kimlik No, a phone number (written in
one of many ways), an IBAN, an e-mail address, their name with Turkish case
suffixes ("Ayşe'nin", "Mehmet'e"), and sometimes a card number, a licence
plate, an address, a birth date or a tax number; the assistant answers formally. Every value comes from
:mod:`ayar.data.pii.fakes`: identifiers pass their checksums, e-mails and IPs
are on reserved domains and ranges. This is what the ``prepare`` stage's PII
redaction must clean, and the data card shows it did.

A small share of records are exact or near duplicates of earlier ones (for the
dedup stage). Everything is deterministic from the seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from ayar.data.pii import fakes
from ayar.data.pii.fakes import harmony_class

EXACT_DUPLICATE_RATE = 0.04
NEAR_DUPLICATE_RATE = 0.04

# {name}: the customer's full name; {first}: given name; {first_gen}: with the genitive suffix
# ("Ayşe'nin"). {other}: another person (a relative, an agent); {other_gen}, {other_dat}: their
# given name with a genitive/dative suffix ("Mehmet'in", "Mehmet'e"); {other_surname_abl}: their
# surname with an ablative suffix ("Yılmaz'dan").
_INTROS = (
    "Merhaba, ben {name}.",
    "İyi günler, adım {name}.",
    "Merhaba, {name} ben.",
    "Selam, ben {first}.",
    "Merhaba, eşim {first_gen} hesabıyla ilgili yazıyorum.",
    "İyi günler, {name} adına yazıyorum.",
)
_PROBLEMS = (
    ("kargo", "Siparişim bir haftadır kargoya verilmedi."),
    ("iade", "Geçen hafta iade ettiğim ürünün ücreti hâlâ hesabıma yatmadı."),
    ("fatura", "Faturamda iki kez ücret alınmış görünüyor."),
    ("kart", "Kartımdan onaylamadığım bir çekim yapılmış."),
    ("adres", "Teslimat adresimi değiştirmek istiyorum."),
    ("abonelik", "Aboneliğimi iptal etmek istiyorum ama uygulamada seçenek yok."),
    ("giris", "Hesabıma giriş yapamıyorum, şifre sıfırlama e-postası gelmiyor."),
    ("arac", "Aracımın servis randevusunu değiştirmek istiyorum."),
)
# Sentences that carry personal data; {x} is filled by the matching fake.
_PII_SENTENCES = {
    "tckn": ("TC kimlik numaram {x}.", "T.C. kimlik no: {x}", "Kimlik numaram {x}, kontrol eder misiniz?"),
    "phone": ("Bana {x} numarasından ulaşabilirsiniz.", "Telefonum: {x}", "Cep: {x}, akşam arayın lütfen.",
              "{other_gen} numarası {x}."),
    "iban": ("İadeyi {x} numaralı IBAN'a yapabilir misiniz?", "IBAN: {x}", "Hesabım {x} (Ziraat)."),
    "email": ("E-posta adresim {x}.", "Dönüşü {x} adresine yapın lütfen.", "Mail: {x}"),
    "card": ("Kart numaram {x}.", "Kredi kartı: {x}"),
    "plate": ("Araç plakası {x}.", "Aracımın plakası {x}."),
    "address": ("Yeni adresim: {x}.", "Adres: {x}"),
    "birth": ("Doğum tarihim {x}.", "D.T.: {x}"),
    "vkn": ("Faturayı şirketimize kesin, vergi numarası {x}.", "VKN: {x}"),
    "mention": ("Lütfen {other_dat} de bilgi verin.", "Temsilciniz {other_surname_abl} bir haber alamadım.",
                "Daha önce {other} ile görüşmüştüm.", "{other_gen} dediğine göre sorun çözülmüştü."),
}
_OPTIONAL = ("card", "plate", "address", "birth", "vkn", "mention")
_REPLIES = {
    "kargo": "Siparişinizi kontrol ettik; en geç iki iş günü içinde kargoya verilecektir.",
    "iade": "İade tutarınız işleme alınmıştır; bankanıza bağlı olarak üç iş günü içinde hesabınıza geçecektir.",
    "fatura": "Mükerrer çekimi tespit ettik; fazla ödenen tutar kartınıza iade edilecektir.",
    "kart": "Kartınızı güvenliğiniz için geçici olarak kullanıma kapattık; itiraz kaydınızı oluşturduk.",
    "adres": "Teslimat adresiniz güncellenmiştir; yeni siparişleriniz bu adrese gönderilecektir.",
    "abonelik": "Aboneliğiniz dönem sonunda sona erecek şekilde iptal edilmiştir.",
    "giris": "Hesabınıza yeni bir şifre sıfırlama bağlantısı gönderdik; lütfen gereksiz klasörünü de kontrol ediniz.",
    "arac": "Servis randevunuzu bir sonraki uygun tarihe aldık; size kısa mesajla bilgi verilecektir.",
}
_REPLY_OPENERS = ("Sayın {name}, merhaba.", "Merhaba {name}.", "Değerli müşterimiz, merhaba.")
_REPLY_CLOSERS = ("Anlayışınız için teşekkür ederiz.", "Başka bir sorunuz olursa bize yazabilirsiniz.")

_GENITIVE = {"ı": "ın", "i": "in", "u": "un", "ü": "ün"}
_DATIVE = {"ı": "a", "i": "e", "u": "a", "ü": "e"}


def with_suffix(name: str, case: str) -> str:
    """``name`` with a Turkish case suffix after an apostrophe, following vowel harmony.

    ``case`` is "genitive" ("Ayşe'nin", "Mehmet'in"), "dative" ("Ayşe'ye", "Mehmet'e")
    or "ablative" ("Ayşe'den", "Mehmet'ten", "Yılmaz'dan").
    """
    vowel, ending = harmony_class(name)
    if case == "genitive":
        suffix = ("n" if ending == "vowel" else "") + _GENITIVE[vowel]
    elif case == "dative":
        suffix = ("y" if ending == "vowel" else "") + _DATIVE[vowel]
    elif case == "ablative":
        suffix = ("t" if ending == "voiceless" else "d") + ("a" if _DATIVE[vowel] == "a" else "e") + "n"
    else:
        raise ValueError(f"unknown case {case!r}: use genitive, dative or ablative")
    return f"{name}'{suffix}"


def _phone(rng: random.Random) -> str:
    if rng.random() < 0.05:
        national = fakes.fake_call_centre(rng)
        return f"{national[:3]} {national[3]} {national[4:]}"  # "444 0 123"
    national = fakes.fake_phone(rng, "mobile" if rng.random() < 0.8 else "landline")
    return fakes.fill_template(rng.choice(fakes.PHONE_STYLES), national)


def _iban(rng: random.Random) -> str:
    iban = fakes.fake_iban(rng)
    return fakes.group_iban(iban) if rng.random() < 0.7 else iban


def _card(rng: random.Random) -> str:
    card = fakes.fake_card(rng, 16, rng.choice("45"))
    return " ".join(card[i:i + 4] for i in range(0, 16, 4))


# Kind of personal data -> a fake value as written in a ticket ("mention" needs none).
_VALUES: dict[str, Callable[[random.Random], str]] = {
    "tckn": fakes.fake_tckn,
    "vkn": fakes.fake_vkn,
    "phone": _phone,
    "iban": _iban,
    "email": fakes.fake_email,
    "card": _card,
    "plate": fakes.fake_plate,
    "address": fakes.fake_address,
    "birth": lambda rng: fakes.format_date(fakes.fake_birth_date(rng), rng),
}


def _ticket(rng: random.Random) -> dict[str, Any]:
    first, surname = fakes.fake_given_name(rng), fakes.fake_surname(rng)
    other_first, other_surname = fakes.fake_given_name(rng), fakes.fake_surname(rng)
    names = {"name": f"{first} {surname}", "first": first, "first_gen": with_suffix(first, "genitive"),
             "other": f"{other_first} {other_surname}", "other_gen": with_suffix(other_first, "genitive"),
             "other_dat": with_suffix(other_first, "dative"),
             "other_surname_abl": with_suffix(other_surname, "ablative")}
    topic, problem = rng.choice(_PROBLEMS)
    kinds = ["tckn", "phone", "iban", "email"]
    rng.shuffle(kinds)
    kinds = kinds[:rng.randint(2, 4)] + [k for k in _OPTIONAL if rng.random() < 0.25]
    sentences = [rng.choice(_INTROS).format(**names), problem]
    for kind in kinds:
        template = rng.choice(_PII_SENTENCES[kind])
        x = _VALUES[kind](rng) if kind in _VALUES else ""
        sentence = template.format(x=x, **names)
        sentences.append(sentence if sentence[-1] in ".!?" else sentence + ".")
    reply = " ".join([rng.choice(_REPLY_OPENERS).format(**names),
                      _REPLIES[topic], rng.choice(_REPLY_CLOSERS)])
    return {"messages": [{"role": "user", "content": " ".join(sentences)},
                         {"role": "assistant", "content": reply}]}


def _near_duplicate(record: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The same ticket with a small edit: an added sentence, punctuation or a greeting changed."""
    user, assistant = (m["content"] for m in record["messages"])
    edit = rng.randrange(3)
    if edit == 0:
        user = user + " Lütfen yardımcı olun."
    elif edit == 1:
        user = user.replace(".", "!", 1)
    else:
        user = user.replace("Merhaba", "Merhabalar", 1) if "Merhaba" in user else "Merhaba. " + user
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def ticket_records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` synthetic support tickets as ``{"messages": [user, assistant]}`` records.

    About 4% are exact copies and 4% near copies of an earlier ticket. The same
    ``n`` and ``seed`` always give the same records.

    Raises:
        ValueError: ``n`` is negative.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    while len(records) < n:
        roll = rng.random()
        if records and roll < EXACT_DUPLICATE_RATE:
            original = rng.choice(records)
            records.append({"messages": [dict(m) for m in original["messages"]]})
        elif records and roll < EXACT_DUPLICATE_RATE + NEAR_DUPLICATE_RATE:
            records.append(_near_duplicate(rng.choice(records), rng))
        else:
            records.append(_ticket(rng))
    return records
