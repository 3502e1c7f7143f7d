from textual.entities import entity_words
from textual.lexical_index import Analyzer

STOP = Analyzer().stopwords


def test_capitalised_words_inside_a_sentence_are_entities_and_sentence_openers_are_not():
    text = "Hey Gina, hope you're well! Took a short trip last week to Rome. Still working on my biz."
    assert entity_words(text, STOP) == ["gina", "rome"]


def test_quoted_titles_and_numbers_are_entities_first_appearance_first_without_repeats():
    text = 'I saw a movie called "Inception" and played "Cyberpunk 2077". Inception was great, 10 out of 10.'
    assert entity_words(text, STOP) == ["inception", "cyberpunk", "2077", "10"]


def test_stopwords_single_letters_and_possessives_are_dropped():
    assert entity_words("Yesterday I read The Hobbit with Tim's kids", STOP) == ["hobbit", "tim"]
    assert entity_words("", STOP) == []
