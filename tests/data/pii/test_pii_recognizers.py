"""Each recognizer finds valid values in varied Turkish sentences and leaves look-alikes alone."""

from __future__ import annotations

import pytest


def found(redactor, text: str) -> set[tuple[str, str]]:
    """(entity type, matched text) of every finding in ``text``."""
    _, findings = redactor.redact_text(text)
    return {(f.entity_type, text[f.start:f.end]) for f in findings}


POSITIVE = [
    # TCKN
    ("TC kimlik numaram 10000000146, kontrol eder misiniz?", "TCKN", "10000000146"),
    ("T.C. No: 12345678950", "TCKN", "12345678950"),
    ("Kimlik bilgim 19090909018 olarak kayıtlı.", "TCKN", "19090909018"),
    ("Mehmet'in TC'si 10000000146", "TCKN", "10000000146"),
    # VKN (context required)
    ("Vergi no: 1234567890", "VKN", "1234567890"),
    ("Şirketimizin VKN'si 1234567890 olarak güncellendi.", "VKN", "1234567890"),
    ("Kadıköy Vergi Dairesi, vergi numaramız 0000000001", "VKN", "0000000001"),
    # IBAN
    ("IBAN'ım TR33 0006 1005 1978 6457 8413 26, iadeyi buraya yapın.", "IBAN", "TR33 0006 1005 1978 6457 8413 26"),
    ("Hesap: TR330006100519786457841326", "IBAN", "TR330006100519786457841326"),
    ("Almanya'daki hesabım DE89 3704 0044 0532 0130 00.", "IBAN", "DE89 3704 0044 0532 0130 00"),
    ("GB82 WEST 1234 5698 7654 32 numaralı hesap", "IBAN", "GB82 WEST 1234 5698 7654 32"),
    # Cards
    ("Kartımın numarası 4111111111111111, lütfen iptal edin.", "CREDIT_CARD", "4111111111111111"),
    ("Ödeme 5500 0000 0000 0004 ile yapıldı.", "CREDIT_CARD", "5500 0000 0000 0004"),
    ("Visa 4111-1111-1111-1111 son kullanma 12/27", "CREDIT_CARD", "4111-1111-1111-1111"),
    ("Amex: 3782 822463 10005", "CREDIT_CARD", "3782 822463 10005"),
    # Phones
    ("Bana +90 532 123 45 67 numarasından ulaşın.", "PHONE_NUMBER", "+90 532 123 45 67"),
    ("Cep: 0532 123 45 67", "PHONE_NUMBER", "0532 123 45 67"),
    ("tel 0090 532 1234567", "PHONE_NUMBER", "0090 532 1234567"),
    ("Numaram 0 (532) 123-45-67, akşam arayın.", "PHONE_NUMBER", "0 (532) 123-45-67"),
    ("0532.123.45.67 numaram", "PHONE_NUMBER", "0532.123.45.67"),
    ("Ofis (0212) 555 12 34", "PHONE_NUMBER", "(0212) 555 12 34"),
    ("İş yeri: 0312 444 55 66", "PHONE_NUMBER", "0312 444 55 66"),
    ("Telefonum 05321234567", "PHONE_NUMBER", "05321234567"),
    ("+905321234567 WhatsApp", "PHONE_NUMBER", "+905321234567"),
    ("whatsapp 5321234567", "PHONE_NUMBER", "5321234567"),
    ("Çağrı merkezi 444 0 444", "PHONE_NUMBER", "444 0 444"),
    ("444 12 34 arayın", "PHONE_NUMBER", "444 12 34"),
    # E-mail, IP
    ("E-posta adresim ayse.yilmaz@example.com.tr, yazın.", "EMAIL_ADDRESS", "ayse.yilmaz@example.com.tr"),
    ("mail: ayşe.yılmaz@firma.com.tr", "EMAIL_ADDRESS", "ayşe.yılmaz@firma.com.tr"),
    ("Sunucu IP'si 192.168.1.10 olarak görünüyor.", "IP_ADDRESS", "192.168.1.10"),
    ("Bağlantı 2001:db8::8a2e:370:7334 adresinden geldi.", "IP_ADDRESS", "2001:db8::8a2e:370:7334"),
    # Plates
    ("Aracımın plakası 34 ABC 123.", "LICENSE_PLATE", "34 ABC 123"),
    ("Plaka 06 A 12345 olan araç", "LICENSE_PLATE", "06 A 12345"),
    ("Otoparktaki 35BC1234 plakalı araç", "LICENSE_PLATE", "35BC1234"),
    ("81 Z 9999 kayıtlı", "LICENSE_PLATE", "81 Z 9999"),
    # Date of birth (context required)
    ("Doğum tarihim 12.03.1985.", "DATE_OF_BIRTH", "12.03.1985"),
    ("D.T: 05/11/1979", "DATE_OF_BIRTH", "05/11/1979"),
    ("1990-05-06 doğumluyum.", "DATE_OF_BIRTH", "1990-05-06"),
    ("doğum tarihi 3 Mart 1977", "DATE_OF_BIRTH", "3 Mart 1977"),
    # Addresses
    ("Adresim Atatürk Mah. Gül Sk. No: 12 D: 5 Kadıköy/İstanbul, teslimatı buraya yapın.",
     "ADDRESS", "Atatürk Mah. Gül Sk. No: 12 D: 5 Kadıköy/İstanbul"),
    ("1234. Sokak No:5 Daire:3, Çankaya / Ankara", "ADDRESS", "1234. Sokak No:5 Daire:3, Çankaya / Ankara"),
    ("Cumhuriyet Mahallesi İnönü Caddesi No 7/3 Bornova İzmir", "ADDRESS",
     "Cumhuriyet Mahallesi İnönü Caddesi No 7/3 Bornova İzmir"),
    # Names
    ("Merhaba, ben Ayşe Yılmaz.", "PERSON", "Ayşe Yılmaz"),
    ("AYŞE YILMAZ adına kayıtlı", "PERSON", "AYŞE YILMAZ"),
    ("Ahmet Karabacak ile görüştüm.", "PERSON", "Ahmet Karabacak"),
    ("Ayşe'nin siparişi gelmedi.", "PERSON", "Ayşe"),
    ("Bunu Mehmet'e iletin.", "PERSON", "Mehmet"),
    ("Yılmaz'dan haber yok.", "PERSON", "Yılmaz"),
    ("Sayın Karabacak, talebiniz alındı.", "PERSON", "Karabacak"),
    ("Dr. Kaya sizi arayacak.", "PERSON", "Kaya"),
    ("dr.kalkavan sizi arayacak.", "PERSON", "kalkavan"),  # a full stop may touch the name
    ("Yılmaz Bey ile görüşün.", "PERSON", "Yılmaz"),
    ("Bugün Deniz geldi.", "PERSON", "Deniz"),
    ("ahmet bey aradı", "PERSON", "ahmet"),
    ("Ayşe-Nur Öztürk'ün kartı", "PERSON", "Ayşe-Nur Öztürk"),
]


@pytest.mark.parametrize(("text", "entity", "value"), POSITIVE)
def test_finds(masker, text, entity, value):
    assert (entity, value) in found(masker, text)


NEGATIVE = [
    # Numbers that are not identifiers
    ("Sipariş no: 12345678901", "TCKN"),               # fails the TCKN check
    ("Referans 98765432109 ile işlem yapıldı.", "TCKN"),
    ("Kayıt 01234567890", "TCKN"),                      # leading zero
    ("Tutar 1.250,00 TL olarak yansıdı.", None),
    ("İşlem zamanı 20240115123045", None),              # timestamp: Luhn-valid or not, no card context
    ("Sipariş numarası 1234567890", "VKN"),             # valid VKN checksum but no tax context
    ("Fatura no 1234567890", "VKN"),
    ("Sipariş no 5321234567", "PHONE_NUMBER"),          # a bare 10-digit run needs phone context
    ("Kod 1234567890 geçersiz", None),
    ("order 4111111111111111 shipped", "CREDIT_CARD"),  # ungrouped card digits need card context
    ("Kartla ödedim, fiş no 4111111111111112", "CREDIT_CARD"),  # context but Luhn fails
    ("IBAN TR33 0006 1005 1978 6457 8413 27", "IBAN"),  # mod 97 fails
    ("Saat 12:30:45 itibarıyla", None),
    ("Sürüm 1.2.3 yüklendi", None),
    ("e-posta a..b@example.com", "EMAIL_ADDRESS"),
    # Dates without birth context
    ("Randevu tarihi 12.03.2024", None),
    ("Sipariş 15.04.2023 tarihinde verildi.", None),
    ("Doğum tarihi: 12.03.1985, randevu 15.04.2024", ("DATE_OF_BIRTH", "15.04.2024")),
    ("doğum tarihim 31.02.1990", "DATE_OF_BIRTH"),     # impossible date
    # Plates
    ("10 GB 500 MB kota", "LICENSE_PLATE"),
    ("12 TL 500 ödedim", "LICENSE_PLATE"),
    ("90 ABC 123", "LICENSE_PLATE"),                    # no province 90
    ("34 ABC 1234", "LICENSE_PLATE"),                   # 3 letters take 2-3 digits
    # Phones with impossible area codes
    ("Kod: 0123 456 78 90", "PHONE_NUMBER"),
    # Words that look like names
    ("Umut ediyorum ki düzelir.", "PERSON"),
    ("Deniz kenarında oturuyoruz.", "PERSON"),
    ("Kaya gibi sağlam.", "PERSON"),
    ("Sayın Yetkili, merhaba.", "PERSON"),
    ("Mustafa Kemal Caddesi'nde trafik var.", "PERSON"),
    ("İstanbul'dan Ankara'ya gittim.", None),
    ("Aydın'dan geldim.", "PERSON"),
    ("Deniz Bank hesabım", "PERSON"),
    ("Kredi Kartı Başvuru Formu", None),
    ("Prof. Dr. Ayşe Kaya", ("PERSON", "Dr")),
    ("Bahçede drenaj sorunu var, avlu da su tutuyor.", "PERSON"),  # "dr", "av" are titles only before a space
    # A street alone is a public place, not a personal address
    ("Bağdat Caddesi'nde trafik var.", "ADDRESS"),
]


@pytest.mark.parametrize(("text", "absent"), NEGATIVE)
def test_leaves_look_alikes(masker, text, absent):
    results = found(masker, text)
    if absent is None:
        assert results == set()
    elif isinstance(absent, tuple):
        assert absent not in results
    else:
        assert absent not in {entity for entity, _ in results}


def test_apostrophe_suffix_stays_outside_the_span(masker):
    text, _ = masker.redact_text("Ayşe'nin kartı Mehmet'e verildi, Yılmaz'dan haber yok. Ali Bey'e sorun.")
    assert text == "[AD_SOYAD]'nin kartı [AD_SOYAD]'e verildi, [AD_SOYAD]'dan haber yok. [AD_SOYAD] Bey'e sorun."


def test_context_can_come_from_the_field_name(masker):
    record = {"vergi_no": "1234567890", "not": "1234567890"}
    assert masker.redact_record(record).record == {"vergi_no": "[VKN]", "not": "1234567890"}
